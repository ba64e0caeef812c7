# One entry point for chores: CI runs the same commands through .ci/run.

.PHONY: install run test lint bench embed

install:
	pip install -e '.[dev]'

run:
	b24-form-gateway serve

test:
	pytest

lint:
	ruff check app tests && ruff format --check app tests && mypy

# All benchmarks, side by side (needs `wrk`); see bench/README.md.
bench:
	python -m bench

# embed.min.js from embed.js with terser (npm, pinned in tools/js/package.json).
embed:
	npm ci --prefix tools/js && python -m app.embed.minify
