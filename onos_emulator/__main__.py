"""`python -m onos_emulator`: the same as the `ecnet-onos-emulator` console script."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
