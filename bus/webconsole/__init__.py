"""The operator console: server-rendered pages (Jinja2, htmx) over the journal, served by ``ironbus run
--console`` under ``/console`` or alone by ``ironbus console``. See docs/console.md."""

from bus.webconsole.app import ConsoleApp, ConsoleContext, for_runtime, mount
from bus.webconsole.auth import Auth, hash_password, verify_password

__all__ = ["Auth", "ConsoleApp", "ConsoleContext", "for_runtime", "hash_password", "mount", "verify_password"]
