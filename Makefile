.PHONY: install check test bench

install:
	pip install -e '.[test]'

check:
	ruff check .
	ruff format --check .
	mypy proxy

test:
	python -m pytest

bench:
	python -m bench
