"""`halt` against a scripted Abiquo over real HTTP: unfence puts each machine back and says
which one Abiquo's check of the hypervisor left in another state; the machine's PUT sends the
machine back as read (the IPMI fields a PUT writes keep their values) and never asks for the
hypervisor login (a PUT does not write it)."""

from __future__ import annotations

import json
from typing import Any

from loguru import logger

from rehost.abiquo import site
from rehost.api import FenceResult
from rehost.plugins.allocation.halt import HaltFence
from tests import test_abiquo_client as scripted
from tests.test_abiquo_client import client

fake = scripted.fake  # the scripted HTTP server fixture


class Ctx:
    log = logger


def machine(n: int, name: str, state: str, **extra: Any) -> dict[str, Any]:
    return {"id": n, "name": name, "ip": f"10.0.0.{n}", "state": state, **extra,
            "links": [{"rel": "edit", "href": f"/api/m/{n}"}]}


def test_unfence_restores_and_reports_a_machine_left_elsewhere(fake: Any) -> None:
    fake.script["/api/admin/datacenters"] = [(200, {"collection": [
        {"id": 1, "name": "dc", "links": [{"rel": "racks", "href": "/api/r"}]}]})]
    fake.script["/api/r"] = [(200, {"collection": [
        {"id": 1, "name": "r", "links": [{"rel": "machines", "href": "/api/m"}]}]})]
    fake.script["/api/m"] = [(200, {"collection": [machine(1, "c5-a", "HALTED"),
                                                   machine(2, "c5-b", "HALTED")]})]
    ipmi = {"ipmiIP": "192.0.2.9", "ipmiUser": "ADMIN"}
    fake.script["/api/m/1"] = [(200, machine(1, "c5-a", "HALTED", **ipmi)),
                               (200, machine(1, "c5-a", "MANAGED"))]
    # Abiquo checks c5-b's hypervisor on the way out of HALTED, and cannot reach it
    fake.script["/api/m/2"] = [(200, machine(2, "c5-b", "HALTED", **ipmi)),
                               (200, machine(2, "c5-b", "STOPPED"))]
    c = client(fake.url)
    fenced = {"halted": [
        {"url": c.absolute("/api/m/1"), "machine": "c5-a", "state": "MANAGED"},
        {"url": c.absolute("/api/m/2"), "machine": "c5-b", "state": "MANAGED"}]}
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    try:
        ctx = Ctx()
        site._clients[ctx] = c  # the campaign's Abiquo client, as site.client(ctx) makes it
        result = HaltFence().unfence(ctx, FenceResult(**fenced))  # type: ignore[arg-type]
    finally:
        logger.remove(sink)

    assert result.restored == [fenced["halted"][0]]
    assert result.not_restored == [{**fenced["halted"][1], "now": "STOPPED"}]
    assert any("c5-b: asked Abiquo to put it back to MANAGED, it is STOPPED" in w
               for w in warnings)
    reads = [s.path for s in fake.seen if s.method == "GET" and s.path.startswith("/api/m/")]
    assert reads == ["/api/m/1", "/api/m/2"]
    puts = [json.loads(s.body) for s in fake.seen if s.method == "PUT"]
    assert [(p["state"], p["ipmiIP"], p["ipmiUser"]) for p in puts] == [
        ("MANAGED", "192.0.2.9", "ADMIN"), ("MANAGED", "192.0.2.9", "ADMIN")]
    assert all("user" not in p and "password" not in p for p in puts)
