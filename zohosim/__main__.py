"""``python -m zohosim serve ...``"""

from zohosim.cli import main

raise SystemExit(main())
