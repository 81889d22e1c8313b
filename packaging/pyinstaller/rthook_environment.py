"""Runtime hook of the frozen bundle (build.spec): programs it starts get the user's environment.

On Linux the bootloader puts the bundle's own library folder first on ``LD_LIBRARY_PATH``
(keeping the original in ``LD_LIBRARY_PATH_ORIG``) and restarts itself, so the dynamic
loader of this process already knows where its libraries are. Every program this process
starts would inherit that setting too: the system browser that ``webbrowser`` opens through
``xdg-open`` for a sign-in would load the bundle's copies of libstdc++, OpenSSL, zlib or
X11 instead of its own, and may refuse to start. Put the original value back (or remove the
variable) for everything started from here on. A copy of the bundle started from here
(the scripted browser) sets it up again for itself.
"""

import os
import sys

if sys.platform != "win32":
    for _name in ("LD_LIBRARY_PATH", "LIBPATH"):
        _original = os.environ.pop(f"{_name}_ORIG", None)
        if _original is not None:
            os.environ[_name] = _original
        else:
            os.environ.pop(_name, None)
