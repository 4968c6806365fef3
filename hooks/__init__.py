"""Hook markers and specifications of rehost.

A plugin writes::

    from rehost.hooks import hookimpl

    class MyNotifier:
        @hookimpl
        def rehost_notify(self, vm, ctx, event):
            send_mail(vm.owner, event)

Every hook is specified, with its documentation, in :mod:`rehost.hooks.specs`.
"""

from __future__ import annotations

import pluggy

#: The pluggy project name, the hook prefix (``rehost_``) and the entry-point group.
PROJECT = "rehost"
ENTRY_POINT_GROUP = "rehost"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["ENTRY_POINT_GROUP", "PROJECT", "hookimpl", "hookspec"]
