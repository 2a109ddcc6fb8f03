.PHONY: setup demo test bench lint

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/posecoach demo

test: setup
	bash scripts/test.sh

bench: setup
	.venv/bin/python -m bench

lint: setup
	.venv/bin/ruff check .
