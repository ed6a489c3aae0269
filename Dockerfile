# The notify-pipeline worker image: the project installed at its locked versions.

# The worker's pages load their browser files from the worker itself: the
# interactive API docs (/docs) Swagger UI, and the dashboard (/dashboard) uPlot
# and its own script and style sheet. The npm packages are pinned in
# web/package-lock.json and installed here as `make install` does. The worker
# image receives only the files the pages load (and the packages' licences);
# it has no Node.js.
FROM node:20-slim AS web-assets
WORKDIR /web
COPY web/package.json web/package-lock.json web/.npmrc ./
RUN npm ci --ignore-scripts --no-audit --no-fund \
    && mkdir /swagger-ui /dashboard \
    && cd node_modules/swagger-ui-dist \
    && cp swagger-ui.css index.css swagger-ui-bundle.js \
        swagger-ui-standalone-preset.js favicon-32x32.png favicon-16x16.png \
        LICENSE NOTICE package.json /swagger-ui/ \
    && cd ../uplot \
    && cp dist/uPlot.iife.min.js dist/uPlot.min.css /dashboard/ \
    && cp LICENSE /dashboard/uPlot.LICENSE \
    && cp package.json /dashboard/uPlot.package.json
COPY web/dashboard/dashboard.js web/dashboard/dashboard.css /dashboard/

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed, unprivileged uid owns the worker's state directory; a named volume
# mounted there starts with this ownership.
RUN groupadd --system --gid 10001 notify \
    && useradd --system --uid 10001 --gid notify --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin notify \
    && mkdir -p /var/lib/notify \
    && chown notify:notify /var/lib/notify

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

# The project itself; its dependencies are all in the lock above.
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY agents ./agents
COPY schemas ./schemas
COPY tables ./tables
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build *.egg-info

# Installed without -e, the package cannot find web/ next to its source: it
# looks under its Python prefix instead, <sys.prefix>/share/notify-pipeline/
# swagger-ui (pipeline/api/docs.py) and .../dashboard (pipeline/api/
# dashboard.py); this image's prefix is /usr/local.
COPY --from=web-assets /swagger-ui/ /usr/local/share/notify-pipeline/swagger-ui/
COPY --from=web-assets /dashboard/ /usr/local/share/notify-pipeline/dashboard/

USER notify:notify
ENV NOTIFY_DATA_DIR=/var/lib/notify
EXPOSE 6066

# Exec form: SIGTERM reaches the worker, which then commits and leaves the group.
ENTRYPOINT ["notify"]
CMD ["worker", "-l", "info"]
