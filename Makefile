# Two commands do all set-up on a fresh machine (Debian, Python >= 3.10):
#   make demo   DeepCluster on Fashion-MNIST with the demo config; its report is runs/fashion-mnist/report/index.html
#   make test   the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
RUN    ?= runs/fashion-mnist
FMNIST  = /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
BROWSER = /usr/bin/chromedriver
FONTS   = /usr/share/fonts/truetype/noto/NotoSans-Regular.ttf
SUDO    = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test bench table1 clean

setup: $(BIN)/.installed $(FMNIST)

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

$(FMNIST):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q dataset-fashion-mnist

# The report tests open pages in a real headless browser: Debian's chromium and its driver.
$(BROWSER):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q chromium chromium-driver

# --resume: a second `make demo` continues (or just re-reports) the same run instead of replacing it.
demo: setup
	$(BIN)/deepcluster train --config configs/fashion-mnist.yaml --out $(RUN) --resume

# The small-scale Table 1: random init, DeepCluster v1 (the demo run) and v2, and the supervised baseline, evaluated
# alike. Trainings resume (or only re-report); evaluations are redone.
table1: setup
	test -f $(RUN)/checkpoint.pt || $(MAKE) demo
	$(BIN)/deepcluster train --config configs/fashion-mnist.yaml --method v2 --bank centre --lr 0.01 \
	  --lr-schedule constant --epochs 8 --out $(RUN)-v2 --resume
	$(BIN)/deepcluster train --config configs/fashion-mnist-supervised.yaml --out $(RUN)-supervised --resume
	$(BIN)/deepcluster eval probe knn cluster transfer class-retrieval copies --run $(RUN) --random-init --epochs 30 \
	  --target-data digits
	for r in $(RUN) $(RUN)-v2 $(RUN)-supervised; do \
	  $(BIN)/deepcluster eval probe knn cluster transfer class-retrieval copies --run $$r --epochs 30 \
	    --target-data digits || exit 1; done
	$(BIN)/deepcluster compare $(RUN) $(RUN)-v2 $(RUN)-supervised --out docs/table1-fashion-mnist.md

# A learning test trains on a folder of letters drawn in the Latin fonts of Debian's font packages
# (benchmarks/folders.py); benchmarks/sources.py names them and installs those missing (as root).
$(FONTS): | $(BIN)/.installed
	$(BIN)/python -c "import sys; sys.path.insert(0, 'benchmarks'); import sources; sources.ensure_font_packages()"

test: setup $(BROWSER) $(FONTS)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/perf.py

clean:
	rm -rf $(VENV) runs .pytest_cache
