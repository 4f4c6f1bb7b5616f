# syntax=docker/dockerfile:1
# One image for both programs (different entrypoints, set by the Helm chart):
#   operator: node /app/dist/operator/src/main.js        (Deployment, runs as uid 65532)
#   agent:    node /app/dist/device-plugin/src/main.js   (DaemonSet; the chart runs it as uid 0 with no capabilities)
# Build:  docker build -t ghcr.io/virtualio/virtualio:0.1.0 .
#   Without Docker or a registry: scripts/build-image.sh (BuildKit with local stand-ins of the two base
#   images as named contexts; it passes --opt cmdline= so the syntax line above needs no registry).
# The runtime stage is distroless (no shell, no package manager) with production dependencies only;
# test/integration/image-production.test.ts repeats the install steps below and starts both entrypoints.

ARG NODE_VERSION=24.21.0
# The distroless Node 24 runtime (Debian 12); its ENTRYPOINT is /nodejs/bin/node.
ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs24-debian12:nonroot

# --- build: compile TypeScript to dist/ -------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY proto/ proto/
COPY crds/ crds/
COPY operator/ operator/
COPY device-plugin/ device-plugin/
RUN npm run build

# --- deps: production dependencies only (no jest, typescript, eslint) -------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

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
WORKDIR /app
COPY --from=deps /app/package.json ./package.json
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# The kubelet APIs are loaded at run time from their .proto sources (proto/load.ts).
COPY proto/deviceplugin/ ./proto/deviceplugin/
COPY proto/podresources/ ./proto/podresources/
# The DRA front end (--dra): the kubelet's DRA plugin, health and plugin-watcher registration APIs.
COPY proto/dra/ ./proto/dra/
COPY proto/dra-health/ ./proto/dra-health/
COPY proto/pluginregistration/ ./proto/pluginregistration/
ENV NODE_ENV=production
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/nodejs/bin/node"]
CMD ["/app/dist/operator/src/main.js"]
