# Build: docker build --build-arg VERSION=v1.2.3 -t registry.example.com/azure-openai-proxy:v1.2.3 .
FROM golang:1.26 AS build
# What -version prints (a Docker build has no VCS information for Go to read).
ARG VERSION=devel
WORKDIR /src
COPY go.mod ./
COPY *.go ./
# Static binary: the final image has no libc.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.buildVersion=${VERSION}" -o /out/azure-openai-proxy .

FROM scratch
# Go reads this file for the roots that verify Azure's certificate.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/azure-openai-proxy /azure-openai-proxy
USER 65532:65532
EXPOSE 8080
# No shell or curl in scratch: the binary checks its own /healthz
# (at AZURE_OPENAI_PROXY_ADDRESS if you set one).
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 CMD ["/azure-openai-proxy", "-healthcheck"]
ENTRYPOINT ["/azure-openai-proxy"]
