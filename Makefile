# soma_shm: the two quick-start commands are `make demo` and `make test`.
# Both set up first (idempotent: Debian packages only when missing, then pip).
PY ?= python3
APT_PACKAGES = libsndfile1 libfftw3-dev chromium xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1
PIP_EXTRAS = test,perf,app,dask

.PHONY: setup setup-apt setup-pip warmup demo test perf clean-shm

setup: setup-apt setup-pip warmup

setup-apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

setup-pip:
	$(PY) -m pip install -q --disable-pip-version-check -e '.[$(PIP_EXTRAS)]'

# Compile every numba kernel now, in parallel processes, with a progress line (first run only:
# the machine code is cached and reused; a second run takes about a second).
warmup: setup-pip
	$(PY) -m soma_shm warmup

demo: setup
	$(PY) -m soma_shm demo

test: setup
	$(PY) -m pytest -q

perf: setup
	$(PY) perf/bench_kernels.py
