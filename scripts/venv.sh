# Sourced by scripts/test and scripts/demo, from the repository root: sets
# $python to the active virtualenv's interpreter, or to .venv/'s, creating
# .venv/ and installing the package with its test extras when it is missing
# or its build inputs changed since the last install.
repo_root="$(pwd)"
venv_dir="${VIRTUAL_ENV:-$repo_root/.venv}"
python="$venv_dir/bin/python"

if [[ "$venv_dir" == "$repo_root/.venv" ]]; then
  if [[ ! -x "$python" ]]; then
    echo "driftstream: creating .venv with ${PYTHON:-python3}" >&2
    "${PYTHON:-python3}" -m venv .venv
  fi
  stamp=".venv/.driftstream-installed"
  # The build inputs: pyproject.toml, and the Rust crate maturin compiles into
  # streamer/_native*.so. An editable install picks up Python edits by itself
  # but not Rust ones, so a change to any of these re-runs the install. File
  # names go into the hash too, so adding or renaming a source counts.
  wanted="$(
    find pyproject.toml native/Cargo.toml native/Cargo.lock native/src -type f |
      LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum | cut -d ' ' -f 1
  )"
  if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]]; then
    if ! command -v cargo >/dev/null; then
      echo "driftstream: cargo is not on PATH; building streamer._native from" \
        "native/ needs Rust: install it with rustup, or put ~/.cargo/bin on PATH" >&2
      exit 1
    fi
    echo "driftstream: pip install -e '.[test]' into .venv" >&2
    "$python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
    echo "$wanted" >"$stamp"
  fi
fi
