"""``python -m app`` = ``oste-gui``."""
import sys

from app.main import main

sys.exit(main())
