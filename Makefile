# soma_shm: the two quick-start commands are `make demo` and `make test`.
# Both set up first (idempotent: Debian packages only when missing, then pip).
PY ?= python3
# libsndfile1 brings libFLAC (FLAC files are decoded by it directly, soma_shm/_flac.py).
APT_PACKAGES = libsndfile1 libfftw3-dev chromium xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 fluidsynth fluid-soundfont-gm espeak-ng sox libsox-fmt-all lame
PIP_EXTRAS = test,perf,app,dask

.PHONY: setup setup-apt setup-pip warmup demo test perf clean-shm

# On a machine whose Python already has the packages the kernels need, they compile while pip
# installs the project (pip mostly waits for the package index, the compile needs the cores);
# otherwise, and if that compile failed, after it.
setup: setup-apt
	@if $(PY) -c "import numba, rocket_fft, numpy, scipy, soundfile" >/dev/null 2>&1; then \
	  $(PY) -m soma_shm warmup & warm=$$!; \
	  $(MAKE) --no-print-directory setup-pip || { kill $$warm 2>/dev/null; wait $$warm; exit 1; }; \
	  wait $$warm || $(PY) -m soma_shm warmup; \
	else \
	  $(MAKE) --no-print-directory warmup; \
	fi

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
