# Two commands for a fresh machine: `make up` (install and start the cloud) and
# `make test` (install and run the whole suite, as CI does).
# The machines carry Python 3.12 and 3.13 under pyenv; elsewhere, have python3.12
# and python3.13 on PATH.
export PYENV_VERSION ?= 3.12.1:3.13.0
PYTHON ?= python3.12
VENV := .venv

.PHONY: up test lint clean system-deps bench-deps

$(VENV)/installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]' 'tox>=4.11,<5'
	touch $@

up: $(VENV)/installed
	$(VENV)/bin/raftcloud up

# tox looks for python3.12/python3.13 on PATH and queries them in a clean
# environment, where pyenv's shims cannot resolve: put the real bin dirs first.
PYTHON_DIRS = $$(for v in python3.12 python3.13; do $$v -c 'import os, sys; print(os.path.dirname(sys.executable), end=":")' 2>/dev/null; done)

# Debian packages the suite drives as real peers: dnsmasq (MX records), swaks
# (an SMTP client), Chromium (Playwright's browser; never `playwright install`),
# wapiti (the web scanner of tests/hostile/test_scanner.py), prometheus (its promtool
# checks every process's metrics, and the server scrapes a live cloud: tests/integration/test_metrics.py),
# and real mail clients against imapd: isync (mbsync, tests/integration/test_imap_mbsync.py) and
# neomutt, driven in tmux (tests/integration/test_imap_neomutt.py); litmus, cadaver and curl
# against the WebDAV door (tests/integration/test_dav.py), and rclone syncing a tree through it
# (tests/integration/test_dav_rclone.py).
SYSTEM_PACKAGES = dnsmasq-base swaks chromium wapiti prometheus isync neomutt tmux litmus curl cadaver rclone

# The same for the benchmarks' peers (bench/README.md): etcd for bench.kv, wrk for
# bench.portal, Dovecot for bench.imap, Apache's mod_dav and rclone for bench.dav.  Each
# bench runs its own private instance; on a machine with systemd, installing dovecot-imapd
# or apache2 also starts the system's server, unused.
BENCH_PACKAGES = etcd-server wrk dovecot-imapd apache2 rclone

# $(call install_missing,PACKAGES): apt-get the ones dpkg does not know, as root only.
define install_missing
	@missing=""; for p in $(1); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "please install these Debian packages:$$missing"; exit 1; fi; fi
endef

system-deps:
	$(call install_missing,$(SYSTEM_PACKAGES))

bench-deps: $(VENV)/installed
	$(call install_missing,$(BENCH_PACKAGES))
	$(VENV)/bin/pip install --quiet -e '.[bench]'

test: $(VENV)/installed system-deps
	PATH="$(PYTHON_DIRS)$$PATH" $(VENV)/bin/tox

lint: $(VENV)/installed
	PATH="$(PYTHON_DIRS)$$PATH" $(VENV)/bin/tox -e lint

clean:
	rm -rf $(VENV) .tox var
