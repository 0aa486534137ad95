# The course's commands. Each target creates .venv and installs the course on first use.
#   make course   execute every notebook headless (active profile) into build/
#   make test     unit tests, then every notebook under nbval (smoke profile)
#   make lab      open JupyterLab on notebooks/
#   make train    train every model of the active profile outside Jupyter (ARGS="gan --steps 2000")
#   make bundle   pack the trained checkpoints (fp16, sampling-only) for learners
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: course test unit notebooks lab lint clean bundle train

# OpenMP threads that sleep while they wait: on a busy 2-core machine spinning threads make
# training many times slower (course_lib/tooling/kernel.py). A value set in the environment wins.
export OMP_WAIT_POLICY ?= PASSIVE

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 is needed, this is " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test]"
	@touch $(STAMP)

course: $(STAMP)
	$(BIN)/python -m course_lib.tooling.run_course $(ARGS)

test: unit notebooks

unit: $(STAMP)
	COURSE_PROFILE=smoke $(BIN)/python -m pytest tests -q --durations=10

notebooks: $(STAMP)
	COURSE_PROFILE=smoke COURSE_PROGRESS=text $(BIN)/python -m pytest --nbval-lax notebooks -q

lab: $(STAMP)
	$(BIN)/python -m course_lib.tooling.kernel
	$(BIN)/jupyter lab notebooks

lint: $(STAMP)
	$(BIN)/ruff check course_lib tests notebooks

# Instructors: train every model once (COURSE_PROFILE=gpu make train), then pack them for learners.
train: $(STAMP)
	COURSE_PROGRESS=text $(BIN)/python -m course_lib.train $(if $(ARGS),$(ARGS),all)

bundle: $(STAMP)
	$(BIN)/python -m course_lib.train --bundle

clean:
	rm -rf build .pytest_cache
