"""twistd dropin: ``twistd ws`` runs a wsplugin WebSocket server."""

from twisted.application.service import ServiceMaker

wsplugin_ws = ServiceMaker(
    "wsplugin WebSocket server",
    "wsplugin.tap",
    "A WebSocket server (RFC 6455/7692) on Twisted endpoints.",
    "ws",
)
