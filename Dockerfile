# syntax=docker/dockerfile:1
# One image for both programs (different entrypoints, set by the Helm chart):
#   operator: node /app/operator/main.js   (Deployment, runs as uid 65532)
#   agent:    node /app/agent/main.js      (DaemonSet; the chart runs it as uid 0 with no capabilities)
# Build:  docker build -t ghcr.io/virtualio/virtualio:0.1.0 .
#   Without Docker or a registry: scripts/build-image.sh (BuildKit with local stand-ins of the two base
#   images as named contexts; it passes --opt cmdline= so the syntax line above needs no registry).
# The runtime stage is distroless (no shell, no package manager) with the two bundled programs (their
# dependencies inside, no node_modules), plus two programs from Debian 12 that the agent runs (execFile,
# no shell) for opt-in features:
# iproute2's `ip` (VF network settings of DRA claims, agent.dra.vfNetworkConfig) and nvme-cli's `nvme`
# (NVMe secondary controllers), each with the shared libraries it needs that the runtime base lacks.
# test/integration/image-production.test.ts repeats the install steps below and starts both entrypoints;
# test/integration/chart-real-node.test.ts runs the built image, `ip` and `nvme` included.

ARG NODE_VERSION=24.21.0
# The distroless Node 24 runtime (Debian 12); its ENTRYPOINT is /nodejs/bin/node.
ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs24-debian12:nonroot

# --- build: compile TypeScript to dist/, then bundle each program into dist/image/ ------------
# `npm run build` is tsc and scripts/bundle.mjs (esbuild): each program and the packages it uses in a
# few ES modules (docs/design-decisions.md, "Agent start-up"), so the runtime stage needs no
# node_modules and a start reads a handful of files instead of ~600.
FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/bundle.mjs scripts/bundle.mjs
COPY proto/ proto/
COPY crds/ crds/
COPY operator/ operator/
COPY device-plugin/ device-plugin/
RUN npm run build

# --- tools: `ip` and `nvme` from Debian 12 with the shared libraries the runtime base lacks ------
# Debian ships neither statically linked, so this stage installs the packages and collects each
# binary's `ldd` closure, leaving out every library the runtime base already has (glibc at least):
# the runtime stage then only adds files, never replaces one of the base's. Cached with the base
# images; only a change of this stage (or a base) downloads the packages again. ("runtime" is the
# runtime base as published, mounted to see which libraries it has.)
FROM ${RUNTIME_IMAGE} AS runtime
FROM node:${NODE_VERSION}-bookworm-slim AS tools
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 nvme-cli \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=runtime,target=/runtime \
    set -eu; \
    lib=/usr/lib/x86_64-linux-gnu; \
    mkdir -p /out/usr/sbin "/out$lib"; \
    cp -L /usr/sbin/ip /usr/sbin/nvme /out/usr/sbin/; \
    ldd /out/usr/sbin/ip /out/usr/sbin/nvme | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u > /tmp/closure; \
    while read -r so path; do \
      have=; \
      for d in /runtime/lib/x86_64-linux-gnu "/runtime$lib" /runtime/lib /runtime/usr/lib; do \
        if [ -e "$d/$so" ] || [ -L "$d/$so" ]; then have=$d; fi; \
      done; \
      if [ -n "$have" ]; then echo "in the runtime base: $so"; continue; fi; \
      real=$(readlink -f "$path"); cp "$real" "/out$lib/"; \
      if [ "${real##*/}" != "$so" ]; then ln -s "${real##*/}" "/out$lib/$so"; fi; \
      echo "added: $so (${real##*/})"; \
    done < /tmp/closure

# --- runtime ------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="virtualio" \
      org.opencontainers.image.description="Operator and node agent that carve NICs, storage HBAs/NVMe and GPUs into slices for KubeVirt VMs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/virtualio/virtualio" \
      org.opencontainers.image.url="https://github.com/virtualio/virtualio" \
      org.opencontainers.image.vendor="virtualio" \
      org.opencontainers.image.base.name="gcr.io/distroless/nodejs24-debian12:nonroot" \
      dev.virtualio.image.repository="ghcr.io/virtualio/virtualio"
# iproute2's ip and nvme-cli's nvme on PATH (/usr/sbin), where the agent's defaults (`ip`, `nvme`;
# VIO_IP_CLI, VIO_NVME_CLI) find them; their libraries in Debian's multiarch folder, which ld.so searches.
COPY --from=tools /out/ /
WORKDIR /app
# package.json: "type": "module" for the bundles and the version the agent reports.
COPY package.json ./package.json
# /app/agent/, /app/operator/ and THIRD-PARTY-LICENSES.txt (scripts/bundle.mjs). The kubelet's gRPC
# APIs are inside, parsed at build time (proto/generated/*/descriptor.ts): no .proto file is read.
COPY --from=build /src/dist/image/ ./
# V8's compiled code of the bundles, made at build time (scripts/warm-compile-cache.mjs; decision in
# docs/design-decisions.md, "Agent start-up"): each start reads it instead of compiling again, and the
# read-only root filesystem is no obstacle (Node only reads the cache when it matches). Node keeps one
# folder per user id: the agent's as root (the chart runs it as uid 0), the operator's as 65532.
ENV NODE_ENV=production \
    NODE_COMPILE_CACHE=/app/.node-compile-cache
COPY scripts/warm-compile-cache.mjs ./scripts/warm-compile-cache.mjs
USER 0:0
RUN ["/nodejs/bin/node", "/app/scripts/warm-compile-cache.mjs", "--share-with", "65532", "/app/agent"]
USER 65532:65532
RUN ["/nodejs/bin/node", "/app/scripts/warm-compile-cache.mjs", "/app/operator"]
EXPOSE 8080
ENTRYPOINT ["/nodejs/bin/node"]
CMD ["/app/operator/main.js"]
