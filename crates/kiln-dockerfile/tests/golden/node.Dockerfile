# syntax=docker/dockerfile:1
ARG NODE_VERSION=20
FROM node:${NODE_VERSION}-alpine AS deps
WORKDIR /app
RUN --mount=type=bind,source=package.json,target=package.json \
    --mount=type=bind,source=package-lock.json,target=package-lock.json \
    --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev

FROM deps AS build
RUN --mount=type=bind,source=package.json,target=package.json \
    --mount=type=bind,source=package-lock.json,target=package-lock.json \
    --mount=type=cache,target=/root/.npm \
    npm ci
COPY . .
RUN --mount=type=secret,id=npmrc,target=/root/.npmrc npm run build

FROM node:${NODE_VERSION}-alpine AS final
ENV NODE_ENV=production
WORKDIR /app
COPY package.json .
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --chmod=755 <<-"EOT" /usr/local/bin/healthcheck
	#!/bin/sh
	wget -qO- http://localhost:${PORT:-3000}/health || exit 1
	EOT
ARG PORT=3000
ENV PORT=$PORT
EXPOSE $PORT
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 CMD ["healthcheck"]
USER node
CMD node dist/index.js
