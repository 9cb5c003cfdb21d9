# syntax=docker/dockerfile:1
# Stage 1: production dependencies only (tsx runs the TypeScript sources, so there is no compile step).
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# Stage 2: the runtime image, without npm's cache or anything dev-only.
FROM node:20-bookworm-slim
ENV NODE_ENV=production PORT=3000 DATA_DIR=/data
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY src ./src
COPY migrations ./migrations
COPY views ./views
COPY public ./public
# The only folder the app writes to (a generated SESSION_SECRET when none is given); a named volume
# mounted here starts out owned by the non-root user.
RUN mkdir -p /data && chown node:node /data
USER node
EXPOSE 3000
# Exec form: node is PID 1 and gets SIGTERM itself; it drains and exits 0 within 10 s.
CMD ["node", "--max-semi-space-size=32", "--heap-growing-percent=200", "--import", "tsx", "src/main.ts"]
