# Sourced by scripts/test and scripts/demo, from the repository root: sets
# $python to the active virtualenv's interpreter, or to .venv/'s, creating
# .venv/ and installing the package with its test extras when it is missing
# or pyproject.toml changed since the last install.
repo_root="$(pwd)"
venv_dir="${VIRTUAL_ENV:-$repo_root/.venv}"
python="$venv_dir/bin/python"

if [[ "$venv_dir" == "$repo_root/.venv" ]]; then
  if [[ ! -x "$python" ]]; then
    echo "driftstream: creating .venv with ${PYTHON:-python3}" >&2
    "${PYTHON:-python3}" -m venv .venv
  fi
  stamp=".venv/.driftstream-installed"
  wanted="$(sha256sum pyproject.toml | cut -d ' ' -f 1)"
  if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]]; then
    echo "driftstream: pip install -e '.[test]' into .venv" >&2
    "$python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
    echo "$wanted" >"$stamp"
  fi
fi

