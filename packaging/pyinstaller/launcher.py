"""Entry script of the frozen bundle (see build.spec): the same ``main`` as ``qargo-desktop``.

It lives outside the package on purpose: PyInstaller puts the entry script's folder on its
search path, and the package's own folder there would let its modules be found a second
time under top-level names (``cli``, ``core``...).
"""

import sys

from qargo_desktop.cli import main

if __name__ == "__main__":
    sys.exit(main())
