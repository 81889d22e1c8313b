"""The sandbox: Microsoft identity platform, Qargo organisation API and Graph mail, on loopback.

It stands beside the core and the UI and imports neither. Start one in process with
:class:`qargo_desktop.sandbox.server.Sandbox`.
"""
