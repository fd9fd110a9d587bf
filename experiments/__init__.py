"""One launcher per paper: `python -m experiments.<paper> --config=experiments/configs/<paper>.py:<variant> --workdir=DIR`."""
