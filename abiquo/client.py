"""A client for the part of the Abiquo 2.4/2.6 REST API rehost needs (docs/abiquo-api.md).

HTTP Basic authentication; versioned media types ``application/vnd.abiquo.<entity>+xml`` or
``+json`` (:mod:`rehost.abiquo.media`): the client asks for one format and reads whichever the
answer is in; links followed by ``rel``; collections paged through their ``next`` links; 202 +
task polling with a time limit; Abiquo's error bodies turned into
:class:`~rehost.abiquo.errors.AbiquoError`.

Which format: ``media = "auto"`` (the default) asks for XML from 2.4 (Abiquo 2.0 serves XML
only and JSON on 2.4 is not confirmed) and JSON from 2.6 (documented); ``"xml"`` or ``"json"``
force one. One media type is sent per ``Accept`` (Abiquo's version filter reads the header as
one media type).

Retries (tenacity, exponential backoff): connection errors and 5xx answers are retried, 4xx never.
A POST (deploy, undeploy, rule creation) is not idempotent, so it is retried only when the
request cannot have been processed: the connection could not be opened, or 502/503/504.

The password lives in one private object whose ``repr`` is masked; it is sent only in the
``Authorization`` header, and neither the logs, nor ``repr``/``str`` of the client, nor an
error message ever contain it.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from loguru import logger
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from rehost.abiquo import media as codec
from rehost.abiquo.errors import AbiquoError
from rehost.abiquo.types import (
    DEPLOYED,
    Datacenter,
    Enterprise,
    Entity,
    FitPolicyRule,
    Link,
    LoadLevelRule,
    Machine,
    Rack,
    Task,
    User,
    VirtualMachine,
    parse,
    parse_links,
    parse_user,
)
from rehost.core.errors import ConfigError

__all__ = ["DEPLOYED", "AbiquoClient", "Datacenter", "Enterprise", "Entity", "FitPolicyRule",
           "Link", "LoadLevelRule", "Machine", "Rack", "Task", "User", "VirtualMachine", "parse"]

MEDIA_PREFIX = codec.MEDIA_PREFIX
VERSIONS = ("2.4", "2.6")
#: the deploy option that forces the soft limits: renamed in 2.6 (jclouds' 2.3 and 2.6 models)
DEPLOY_FORCE_FIELD = {"2.4": "forceEnterpriseSoftLimits", "2.6": "forceVdcLimits"}
#: the VM's media type for one VM and a list of VMs (jclouds' Abiquo provider, 2.3 and 2.6)
VM_MEDIA = "virtualmachinewithnodeextended"
VMS_MEDIA = "virtualmachineswithnodeextended"
#: task states that mean "still running"
TASK_RUNNING = frozenset({"PENDING", "QUEUEING", "STARTED"})
TASK_FAILED = frozenset({"FINISHED_UNSUCCESSFULLY", "ABORTED", "ACK_ERROR", "CANCELLED"})
UNTRACEABLE = "untraceable"
#: users asked for a page: Abiquo 2.0 pages an enterprise's users with ``numResults``
#: (default 25) and ignores ``limit``/``startwith``; the client sends both and keeps each
#: user once
USERS_PAGE = 1000


# -- transport ----------------------------------------------------------------------------------


class _Secret:
    """A string that never shows itself in a repr, a str or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'********'"

    __str__ = __repr__


class _BasicAuth(requests.auth.AuthBase):
    def __init__(self, user: str, password: _Secret) -> None:
        self.user = user
        self._password = password

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        token = base64.b64encode(f"{self.user}:{self._password.reveal()}".encode()).decode()
        r.headers["Authorization"] = f"Basic {token}"
        return r

    def __repr__(self) -> str:
        return f"_BasicAuth(user={self.user!r})"


def _retryable(method: str) -> Any:
    def check(exc: BaseException) -> bool:
        if isinstance(exc, AbiquoError):
            if exc.status is None:
                return False
            return exc.status in (502, 503, 504) if method == "POST" else exc.status >= 500
        if method == "POST":
            return isinstance(exc, requests.ConnectionError) and not isinstance(
                exc, requests.ReadTimeout)
        return isinstance(exc, requests.ConnectionError | requests.Timeout)

    return retry_if_exception(check)


def error_from_response(resp: requests.Response) -> AbiquoError:
    """Abiquo's errors (``<errors><error><code/><message/>`` in XML,
    ``{"collection": [{"code", "message"}]}`` in JSON), or what the answer was instead."""
    code, message = f"{resp.status_code}", (resp.reason or "")
    try:
        body = codec.decode(resp.content, resp.headers.get("Content-Type", ""), collection=True)
        errors = body.get("collection") if isinstance(body, dict) else None
        if errors and isinstance(errors[0], dict):
            code = str(errors[0].get("code") or code)
            message = "; ".join(str(e.get("message") or "") for e in errors)
        elif resp.text.strip():
            message = resp.text.strip()[:300]
    except codec.MediaError:
        text = resp.text.strip()
        if text:
            message = text[:300]
    return AbiquoError(resp.status_code, code, message, resp.url)


class AbiquoClient:
    """Talks to one Abiquo API. ``url`` is the API root (``https://HOST/api``)."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        *,
        version: str = "2.6",
        media: str = "auto",
        verify_tls: bool | str = True,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.5,
        task_timeout: float = 900.0,
        poll_interval: float = 1.0,
        page_size: int = 100,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"abiquo url must be http(s)://HOST/api, not {url!r}")
        if parts.username or parts.password:
            raise ConfigError("abiquo url must not hold credentials: give user and password")
        if media not in ("auto", "xml", "json"):
            raise ConfigError(f"abiquo media must be auto, xml or json, not {media!r}")
        self.url = url.rstrip("/")
        self.user = user
        self.version = version
        #: the format asked for: XML from 2.4 (JSON unconfirmed there), JSON from 2.6
        self.format = media if media != "auto" else ("xml" if version < "2.6" else "json")
        self.verify_tls = verify_tls
        self.timeout = (connect_timeout, timeout)
        self.retries = max(1, retries)
        self.backoff = backoff
        self.task_timeout = task_timeout
        self.poll_interval = poll_interval
        self.page_size = page_size
        self._session = requests.Session()
        self._session.trust_env = False  # no ~/.netrc credentials, no proxy from the environment
        self._session.auth = _BasicAuth(user, _Secret(password))
        self._session.verify = verify_tls

    def __repr__(self) -> str:
        return (f"AbiquoClient(url={self.url!r}, user={self.user!r}, version={self.version!r}, "
                f"format={self.format!r})")

    __str__ = __repr__

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> AbiquoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------------

    def media(self, entity: str) -> str:
        return codec.media_type(entity, self.format, self.version)

    @property
    def global_vm_list(self) -> bool:
        """Whether ``GET /cloud/virtualmachines`` exists (2.6; not confirmed on 2.4). It lists
        only what the caller's enterprise may see: never the way to find every VM of a host."""
        return self.version >= "2.6"

    def absolute(self, href: str) -> str:
        """A link's href as a full URL: absolute as given, ``/api/...`` on the API's host,
        anything else under the API root."""
        return urljoin(self.url + "/", href)

    def request(self, method: str, href: str, *, accept: str | None = None,
                content: str | None = None, body: Any = None,
                params: dict[str, Any] | None = None) -> requests.Response:
        """One call, with retries; raises :class:`AbiquoError` for any answer >= 400. ``body``
        is the JSON shape (encoded in the client's format as the entity ``content``), or bytes
        already encoded in that format."""
        url = self.absolute(href)
        headers = {"Accept": self.media(accept) if accept else "*/*"}
        data: bytes | None = None
        if content:
            headers["Content-Type"] = self.media(content)
            if body is not None:
                data = body if isinstance(body, bytes) else codec.encode(content, body,
                                                                         self.format)
        retrying = Retrying(
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=self.backoff, max=30),
            retry=_retryable(method.upper()),
            reraise=True,
            before_sleep=lambda rs: logger.warning(
                "abiquo: {} {} failed ({}), attempt {} of {}; retrying", method, url,
                _describe(rs.outcome.exception() if rs.outcome else None),
                rs.attempt_number, self.retries),
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._send(method, url, headers, data, params)
        except requests.RequestException as exc:
            raise AbiquoError(None, "CONNECTION", f"cannot reach the Abiquo API at {self.url}"
                              f" ({_reason(exc)}; {self.retries} attempts)", url) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, method: str, url: str, headers: dict[str, str], data: bytes | None,
              params: dict[str, Any] | None) -> requests.Response:
        t0 = time.monotonic()
        resp = self._session.request(method, url, headers=headers, data=data, params=params,
                                     timeout=self.timeout)
        logger.debug("abiquo: {} {} -> {} ({:.0f} ms)", method, resp.url, resp.status_code,
                     (time.monotonic() - t0) * 1000)
        if resp.status_code >= 400:
            raise error_from_response(resp)
        return resp

    @staticmethod
    def decode(resp: requests.Response, collection: bool | None = None) -> Any:
        """An answer's body in the JSON shape, from XML or JSON."""
        try:
            return codec.decode(resp.content, resp.headers.get("Content-Type", ""), collection)
        except codec.MediaError as exc:
            raise AbiquoError(resp.status_code, "MEDIA", str(exc), resp.url) from exc

    def get(self, href: str, accept: str, params: dict[str, Any] | None = None,
            collection: bool | None = None) -> Any:
        resp = self.request("GET", href, accept=accept, params=params)
        return self.decode(resp, collection) if resp.content else None

    def follow(self, entity: Entity, rel: str, accept: str) -> Any:
        """GET the target of ``entity``'s link ``rel``."""
        return self.get(entity.href(rel), accept)

    def collection(self, href: str, accept: str,
                   params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a collection, following ``next`` links page by page."""
        query: dict[str, Any] | None = {"limit": self.page_size, **(params or {})}
        seen: set[str] = set()
        next_href: str | None = href
        while next_href and next_href not in seen:
            seen.add(next_href)
            page = self.get(next_href, accept, query, collection=True) or {}
            query = None  # the next link carries its own query
            yield from page.get("collection") or []
            nxt = next((x for x in parse_links(page) if x.rel == "next"), None)
            next_href = nxt.href if nxt else None

    # -- infrastructure -------------------------------------------------------------------------

    def datacenters(self) -> list[Datacenter]:
        return [parse(Datacenter, d) for d in self.collection("admin/datacenters", "datacenters")]

    def racks(self, datacenter: Datacenter) -> list[Rack]:
        return [parse(Rack, r) for r in self.collection(datacenter.href("racks"), "racks")]

    def machines(self, rack: Rack | None = None) -> list[Machine]:
        """The machines of a rack, or of every rack of every datacenter."""
        return [m for _, m in self.racked_machines(rack)]

    def racked_machines(self, rack: Rack | None = None) -> list[tuple[Rack, Machine]]:
        """Each machine of a rack, or of every rack of every datacenter, with the rack it
        stands in (datacenter -> racks -> machines: a machine is listed under its rack)."""
        racks = [rack] if rack else [r for dc in self.datacenters() for r in self.racks(dc)]
        return [(r, parse(Machine, m)) for r in racks
                for m in self.collection(r.href("machines"), "machines")]

    def machine(self, href: str) -> Machine:
        return parse(Machine, self.get(href, "machine"))

    def set_machine_state(self, machine: Machine, state: str) -> Machine:
        """``HALTED`` disables a machine (no deploys); ``MANAGED`` enables it again (Abiquo
        checks the hypervisor first: the state returned may be another, e.g. ``STOPPED``).

        A PUT sends the whole machine: it is read just before and sent back as read, with only
        its state changed (an XML body element for element), so that the fields Abiquo does
        write (name, description, the IPMI fields) keep their values. Abiquo never writes the
        hypervisor login from a PUT, so it is not read (no ``?credentials=true``)."""
        resp = self.request("GET", machine.url, accept="machine")
        if codec.format_of(resp.headers.get("Content-Type", ""), resp.content) == "xml" \
                and self.format == "xml":
            body: Any = codec.set_xml_field(resp.content, "state", state)
        else:
            body = self.decode(resp)
            body["state"] = state
        resp = self.request("PUT", machine.href("edit"), accept="machine", content="machine",
                            body=body)
        return parse(Machine, self.decode(resp)) if resp.content else self.machine(machine.url)

    def check_machine_state(self, machine: Machine) -> str:
        return str(self.follow(machine, "checkstate", "machinestate")["state"])

    # -- virtual machines -----------------------------------------------------------------------

    def machine_vms(self, machine: Machine) -> list[VirtualMachine]:
        """Every VM on ``machine``, of every tenant (its link rel ``virtualmachines``; the
        admin's view, as in Abiquo 2.0 and since). A VM Abiquo found on the hypervisor but
        does not manage has no link to a VM of its own (``url`` is empty)."""
        return [parse(VirtualMachine, v)
                for v in self.collection(machine.href("virtualmachines"), VMS_MEDIA)]

    def virtual_machines(self, machine: Machine | None = None) -> list[VirtualMachine]:
        """The VMs on ``machine`` (every tenant's); without a machine, the VMs of every
        machine, then those on none (not deployed) that the caller's enterprise may see:
        ``/cloud/virtualmachines`` on 2.6, the virtual datacenters' appliances on 2.4."""
        if machine is not None:
            return self.machine_vms(machine)
        found: dict[str, VirtualMachine] = {}
        for m in self.machines():
            for v in self.machine_vms(m):
                if v.url:
                    found.setdefault(self.absolute(v.url), v)
        for v in self._cloud_vms():
            found.setdefault(self.absolute(v.url), v)
        return list(found.values())

    def _cloud_vms(self) -> Iterator[VirtualMachine]:
        if self.global_vm_list:
            for v in self.collection("cloud/virtualmachines", VMS_MEDIA):
                yield parse(VirtualMachine, v)
            return
        for vdc in self.collection("cloud/virtualdatacenters", "virtualdatacenters"):
            for vapp in self.collection(Entity(links=parse_links(vdc)).href(
                    "virtualappliances"), "virtualappliances"):
                for v in self.collection(Entity(links=parse_links(vapp)).href(
                        "virtualmachines"), VMS_MEDIA):
                    yield parse(VirtualMachine, v)

    def find_vm(self, *, uuid: str | None = None, name: str | None = None) -> VirtualMachine:
        """The VM with this uuid, or this name (its domain's name, or ``nodeName``): first on
        the machines (every tenant's VMs), then among the VMs on none."""
        if not uuid and not name:
            raise ValueError("find_vm needs a uuid or a name")

        def match(vm: VirtualMachine) -> bool:
            return bool((uuid and vm.uuid == uuid)
                        or (name and name in (vm.name, vm.nodeName, vm.label)))

        for m in self.machines():
            for vm in self.machine_vms(m):
                if vm.url and match(vm):
                    return self.vm(vm)
        for vm in self._cloud_vms():
            if match(vm):
                return self.vm(vm)
        wanted = f"uuid {uuid}" if uuid else f"name {name!r}"
        raise AbiquoError(404, "VM-1", f"no virtual machine with {wanted}", self.url)

    def vm(self, vm: VirtualMachine | str) -> VirtualMachine:
        """The VM as Abiquo shows it now."""
        href = vm if isinstance(vm, str) else vm.url
        return parse(VirtualMachine, self.get(href, VM_MEDIA))

    def vm_machine(self, vm: VirtualMachine) -> Machine | None:
        """The machine a VM is deployed on (its link rel ``machine``), or None."""
        link = self.vm(vm).link("machine")
        return self.machine(link.href) if link else None

    def vm_state(self, vm: VirtualMachine) -> str:
        return str(self.follow(vm, "state", "virtualmachinestate")["state"])

    def deploy(self, vm: VirtualMachine, *, wait: bool = True,
               timeout: float | None = None) -> Task:
        """Deploy with the soft limits not forced, in the option's name for the version
        (``forceEnterpriseSoftLimits`` up to 2.4, ``forceVdcLimits`` from 2.6)."""
        field = DEPLOY_FORCE_FIELD.get(self.version, "forceVdcLimits")
        return self._action(vm, "POST", "deploy", "virtualmachinetask", {field: False}, wait,
                            timeout)

    def undeploy(self, vm: VirtualMachine, *, force: bool = False, wait: bool = True,
                 timeout: float | None = None) -> Task:
        return self._action(vm, "POST", "undeploy", "virtualmachinetask",
                            {"forceUndeploy": force}, wait, timeout)

    def set_vm_state(self, vm: VirtualMachine, state: str, *, wait: bool = True,
                     timeout: float | None = None) -> Task:
        """Power a VM ``ON``, ``OFF`` or ``PAUSED`` (PUT on its link rel ``state``)."""
        return self._action(vm, "PUT", "state", "virtualmachinestate", {"state": state},
                            wait, timeout)

    def power_on(self, vm: VirtualMachine, **kw: Any) -> Task:
        return self.set_vm_state(vm, "ON", **kw)

    def power_off(self, vm: VirtualMachine, **kw: Any) -> Task:
        return self.set_vm_state(vm, "OFF", **kw)

    def _action(self, vm: VirtualMachine, method: str, rel: str, content: str, body: Any,
                wait: bool, timeout: float | None) -> Task:
        resp = self.request(method, vm.href(rel), accept="acceptedrequest", content=content,
                            body=body)
        accepted = (self.decode(resp) if resp.content else None) or {}
        link = next((x for x in parse_links(accepted) if x.rel in ("status", "task")), None)
        if link is None:
            raise AbiquoError(resp.status_code, "TASK-LINK", "the API accepted the request "
                              "but gave no task link (rel status or task)", resp.url)
        status = Link("status", link.href, link.type, link.title)
        logger.info("abiquo: {} {} accepted: {}", rel, vm.name, accepted.get("message") or "")
        if link.href.rstrip("/").rsplit("/", 1)[-1] == UNTRACEABLE:
            # nothing was done (e.g. the VM is not on a hypervisor): no task to wait for
            logger.info("abiquo: {} {}: nothing to do (untraceable task)", rel, vm.name)
            return Task(links=[status], raw=accepted, taskId=UNTRACEABLE, state="UNTRACEABLE",
                        type=rel.upper())
        if not wait:
            return Task(links=[status], raw=accepted, state="PENDING")
        return self.wait_task(link.href, timeout=timeout)

    def task(self, href: str) -> Task:
        return parse(Task, self.get(href, "task"))

    def wait_task(self, href: str, *, timeout: float | None = None,
                  check: bool = True) -> Task:
        """Poll a task until it leaves PENDING/QUEUEING/STARTED, within ``timeout`` seconds.
        A failed task raises :class:`AbiquoError` (code ``TASK-FAILED``) when ``check``."""
        limit = self.task_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        pauses = self._pauses()
        while True:
            task = self.task(href)
            if task.state not in TASK_RUNNING:
                break
            if time.monotonic() >= deadline:
                raise AbiquoError(None, "TASK-TIMEOUT", f"task {task.type} {task.taskId} still "
                                  f"{task.state} after {limit:g} s", href)
            time.sleep(min(next(pauses), max(0.0, deadline - time.monotonic())))
        if check and task.state in TASK_FAILED:
            detail = "; ".join(str(j.get("description", "")) for j in task.failed_jobs)
            raise AbiquoError(None, "TASK-FAILED", f"task {task.type} {task.taskId} "
                              f"{task.state}" + (f": {detail}" if detail else ""), href)
        return task

    def wait_vm(self, vm: VirtualMachine, states: set[str] | frozenset[str], *,
                timeout: float | None = None) -> VirtualMachine:
        """Re-read a VM until its state is one of ``states`` (e.g. NOT_ALLOCATED after the
        domain was undefined on its host)."""
        limit = self.task_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        pauses = self._pauses()
        while True:
            now = self.vm(vm)
            if now.state in states:
                return now
            if time.monotonic() >= deadline:
                raise AbiquoError(None, "VM-TIMEOUT", f"{vm.name} is {now.state}, not "
                                  f"{'/'.join(sorted(states))}, after {limit:g} s", vm.url)
            time.sleep(min(next(pauses), max(0.0, deadline - time.monotonic())))

    #: the first pause between two polls of a task or a VM; each next one is 1.5 times longer,
    #: up to ``poll_interval``: a task that ends in a second is seen ending within a tenth
    #: of it, and a long one is still asked once a ``poll_interval``
    first_poll = 0.1

    def _pauses(self) -> Iterator[float]:
        pause = min(self.first_poll, self.poll_interval)
        while True:
            yield pause
            pause = min(pause * 1.5, self.poll_interval)

    # -- who a VM belongs to: its enterprise and the enterprise's users --------------------------

    def enterprise(self, href: str) -> Enterprise:
        return parse(Enterprise, self.get(href, "enterprise"))

    def _vm_link(self, vm: VirtualMachine, rel: str) -> Link | None:
        """A link of the VM; when the view in hand lacks it, the VM itself is read again
        (2.0 gives rel ``enterprise`` and ``user`` in a machine's list and in the VM's own
        admin view)."""
        found = vm.link(rel)
        if found is None and vm.url:
            found = self.vm(vm).link(rel)
        return found

    def vm_enterprise(self, vm: VirtualMachine) -> Enterprise | None:
        """The enterprise that owns ``vm`` (its link rel ``enterprise``), or None when Abiquo
        names none."""
        link = self._vm_link(vm, "enterprise")
        return self.enterprise(link.href) if link else None

    def vm_user(self, vm: VirtualMachine) -> User | None:
        """The user ``vm`` belongs to (its link rel ``user``: who created it), or None (a
        deleted user)."""
        link = self._vm_link(vm, "user")
        return parse_user(self.get(link.href, "user")) if link else None

    def enterprise_users(self, enterprise: Enterprise) -> list[User]:
        """Every user of ``enterprise`` (its link rel ``users``, media type ``users``), each
        once, without their passwords. Abiquo 2.0 pages them by ``numResults``, later
        versions by ``limit``: both are sent, ``next`` links are followed, and a user seen
        twice (a server that ignores the page asked for) is kept once."""
        found: dict[Any, User] = {}
        for item in self.collection(enterprise.href("users"), "users",
                                    {"limit": USERS_PAGE, "numResults": USERS_PAGE}):
            user = parse_user(item)
            found.setdefault(user.id if user.id is not None else (user.url or user.nick),
                             user)
        return list(found.values())

    # -- allocation rules -----------------------------------------------------------------------

    def load_level_rules(self) -> list[LoadLevelRule]:
        return [parse(LoadLevelRule, r)
                for r in self.collection("admin/rules/machineLoadLevel", "machineloadrules")]

    def create_load_level_rule(self, target: Machine | Rack | Datacenter, *, cpu: int,
                               ram: int) -> LoadLevelRule:
        """A rule admitting VMs on ``target`` only while used + required stays within
        ``cpu``% of its CPUs and ``ram``% of its RAM."""
        rel = {Machine: "machine", Rack: "rack", Datacenter: "datacenter"}[type(target)]
        body = {"cpuLoadPercentage": cpu, "ramLoadPercentage": ram,
                "links": [Link(rel, target.url).to_dict()]}
        resp = self.request("POST", "admin/rules/machineLoadLevel", accept="machineloadrule",
                            content="machineloadrule", body=body)
        return parse(LoadLevelRule, self.decode(resp))

    def delete_load_level_rule(self, rule: LoadLevelRule) -> None:
        self.request("DELETE", rule.url)

    def fit_policy_rules(self) -> list[FitPolicyRule]:
        return [parse(FitPolicyRule, r)
                for r in self.collection("admin/rules/fitsPolicy", "fitpolicyrules")]

    def create_fit_policy_rule(self, policy: str,
                               datacenter: Datacenter | None = None) -> FitPolicyRule:
        """``PROGRESSIVE`` or ``PERFORMANCE``, for one datacenter or (None) globally."""
        body: dict[str, Any] = {"fitPolicy": policy, "links": []}
        if datacenter is not None:
            body["links"] = [Link("datacenter", datacenter.url).to_dict()]
        resp = self.request("POST", "admin/rules/fitsPolicy", accept="fitpolicyrule",
                            content="fitpolicyrule", body=body)
        return parse(FitPolicyRule, self.decode(resp))

    def delete_fit_policy_rule(self, rule: FitPolicyRule) -> None:
        self.request("DELETE", rule.url)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "?"
    if isinstance(exc, AbiquoError):
        return f"HTTP {exc.status} {exc.code}"
    return type(exc).__name__


def _reason(exc: requests.RequestException) -> str:
    """Why a request did not get through, in a few words (requests' own text nests the
    urllib3 error three deep)."""
    if isinstance(exc, requests.Timeout):
        return f"no answer in time: {type(exc).__name__}"
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        found = re.search(r"certificate verify failed: ([^(')\"]+)", text)
        detail = found.group(1).strip() if found else "certificate verify failed"
        return (f"its TLS certificate is not trusted: certificate verify failed: {detail}; "
                "give the CA that signed it as [abiquo] ca_file")
    for marker, said in (("Connection refused", "connection refused"),
                         ("Name or service not known", "unknown host name"),
                         ("No route to host", "no route to host"),
                         ("Network is unreachable", "network unreachable"),
                         ("timed out", "timed out")):
        if marker in text:
            return said
    return type(exc).__name__
