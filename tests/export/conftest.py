import sys
from pathlib import Path

# decisive_model.py and parity.py are imported by name
sys.path.insert(0, str(Path(__file__).parent))
