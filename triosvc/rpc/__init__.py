"""RPC between services (SPEC §6): ``@rpc`` methods, ``RpcProxy``, standalone clients.

::

    from triosvc.rpc import RpcProxy, rpc


    class UserService:
        name = "users"

        @rpc
        async def get_user(self, user_id, verbose=False):
            return {"id": user_id}


    class GreetingService:
        name = "greetings"
        users = RpcProxy("users")

        @rpc
        async def greet(self, user_id):
            user = await self.users.get_user(user_id)
            return f"hello, {user['id']}"

        @rpc
        def greet_blocking(self, user_id):  # a thread: the proxy blocks
            return f"hello, {self.users.get_user(user_id)['id']}"

The transport is chosen by ``BROKER_URL``: ``memory://`` (the default: services of one
process), ``memory://<name>`` (a separate in-process broker) or ``redis://host[:port][/db]``
(services in other processes and on other hosts; the ``redis`` extra). Remote exceptions come
back as :class:`~triosvc.exceptions.RemoteError`, or as their own class when registered
with :func:`remote_error`. See ``docs/rpc.md``.
"""

from __future__ import annotations

from ..exceptions import RemoteError as RemoteError
from ..exceptions import RpcTimeout as RpcTimeout
from ..exceptions import UnknownService as UnknownService
from ._client import BlockingRpcClient as BlockingRpcClient
from ._client import RpcClient as RpcClient
from ._client import open_rpc_client as open_rpc_client
from ._client import rpc_client as rpc_client
from ._entrypoint import RpcEntrypoint as RpcEntrypoint
from ._entrypoint import rpc as rpc
from ._errors import is_registered as is_registered
from ._errors import remote_error as remote_error
from ._proxy import BlockingServiceProxy as BlockingServiceProxy
from ._proxy import RpcProxy as RpcProxy
from ._proxy import ServiceProxy as ServiceProxy
from ._server import RpcServer as RpcServer

__all__ = [
    "BlockingRpcClient",
    "BlockingServiceProxy",
    "RemoteError",
    "RpcClient",
    "RpcEntrypoint",
    "RpcProxy",
    "RpcServer",
    "RpcTimeout",
    "ServiceProxy",
    "UnknownService",
    "is_registered",
    "open_rpc_client",
    "remote_error",
    "rpc",
    "rpc_client",
]
