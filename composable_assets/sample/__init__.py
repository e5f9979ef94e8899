"""The bundled retail sample: a seeded source-data generator and a ready-made project that reads its tables."""

from pathlib import Path

SAMPLE_PROJECT_DIR: Path = Path(__file__).resolve().parent / "project"
