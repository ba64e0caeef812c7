# One entry point for chores (STYLE.md §14): CI runs the same commands through .ci/run.

.PHONY: install run test lint bench

install:
	pip install -e '.[dev]'

run:
	b24-form-gateway serve

test:
	pytest

lint:
	ruff check app tests && ruff format --check app tests && mypy

# Harmless until bench/ has an entry point: then it runs `python -m bench`.
bench:
	@if [ -f bench/__main__.py ]; then python -m bench; \
	else echo "no benchmarks yet: they live in bench/ (add bench/__main__.py to run them here)"; fi
