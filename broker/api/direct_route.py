"""DirectRoute: an APIRoute whose endpoint takes the Request and returns the Response itself.

FastAPI's generic handler (body parsing, dependency solving, response validation and
serialization) costs more than the rest of the create-upload request. A DirectRoute skips
it and calls the endpoint straight away; everything around the handler stays as for any
route: middleware, exception handlers, and the OpenAPI description, which comes from the
route's arguments (`openapi_extra` for the body and headers the endpoint reads by hand).
This is FastAPI's documented extension point: a custom APIRoute overriding
get_route_handler.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class DirectRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint  # type: ignore[no-any-return]
