.PHONY: install check test bench

install:
	pip install -c constraints.txt -e '.[test]'

check:
	ruff check .
	ruff format --check .
	mypy proxy

test:
	python -m pytest

bench:
	python -m bench
