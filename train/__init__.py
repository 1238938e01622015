"""Training, evaluation and Hub push for the emotion classifier: `python -m train --help`."""
