package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// clientKeys are the keys the proxy's own clients must present (as
// 'Authorization: Bearer' or 'api-key'). Only their SHA-256 digests are
// kept, and a presented key is compared with every one in constant time.
type clientKeys struct {
	digests [][sha256.Size]byte
}

func (k *clientKeys) allows(key string) bool {
	if key == "" {
		return false
	}
	d := sha256.Sum256([]byte(key))
	match := 0
	for _, want := range k.digests {
		match |= subtle.ConstantTimeCompare(d[:], want[:])
	}
	return match == 1
}

// loadClientKeys reads AZURE_OPENAI_PROXY_KEYS (comma-separated) and
// AZURE_OPENAI_PROXY_KEYS_FILE (one per line; blank lines and # comments
// skipped). nil when neither names a key: then clients are not checked.
func loadClientKeys(getenv func(string) string, files *sourceFiles) (*clientKeys, error) {
	var keys []string
	listed := getenv("AZURE_OPENAI_PROXY_KEYS")
	for k := range strings.SplitSeq(listed, ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	if listed != "" && len(keys) == 0 {
		// Set, but to nothing: refused, or it would turn client keys off.
		return nil, settingError("AZURE_OPENAI_PROXY_KEYS", "is set but holds no key")
	}
	if path := strings.TrimSpace(getenv("AZURE_OPENAI_PROXY_KEYS_FILE")); path != "" {
		data, err := files.read(path, true)
		if err != nil {
			return nil, settingError("AZURE_OPENAI_PROXY_KEYS_FILE", "cannot read %s: %v", path, unwrapPathError(err))
		}
		lines := bufio.NewScanner(bytes.NewReader(data))
		for lines.Scan() {
			if k := strings.TrimSpace(lines.Text()); k != "" && !strings.HasPrefix(k, "#") {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			return nil, settingError("AZURE_OPENAI_PROXY_KEYS_FILE", "%s holds no key", path)
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	ck := &clientKeys{}
	for _, k := range keys {
		ck.digests = append(ck.digests, sha256.Sum256([]byte(k)))
	}
	return ck, nil
}

// authorize checks the client's key and returns the key it brings for Azure:
// "" when clients present proxy keys (which go no further) or none. A request
// that no backend could serve without the client's key is refused here,
// before its body is read. ephemeral says the key is a WebRTC ephemeral key,
// which goes to Azure as the Bearer token, with no key of the proxy's.
func authorize(table *routeTable, h http.Header, rt route) (key string, ephemeral bool, e *apiError) {
	key = clientKey(h)
	if key == "" && rt.upgrade {
		key, _ = subprotocolKey(h)
	}
	if rt.clientBearer && h.Get("Api-Key") == "" && key != "" && (table.clientKeys == nil || !table.clientKeys.allows(key)) {
		// The browser's SDP offer, with the ephemeral key a client the
		// proxy let in has minted. A proxy key takes the usual way.
		return key, true, nil
	}
	if table.clientKeys != nil {
		if !table.clientKeys.allows(key) {
			return "", false, newAPIError(http.StatusUnauthorized, typeInvalidRequest, "invalid_api_key", "",
				"Incorrect API key provided: this proxy accepts only its own client keys (as 'Authorization: Bearer KEY' or 'api-key').")
		}
		return "", false, nil // a proxy key, not an Azure key: it goes no further
	}
	if key == "" && !table.anyCredential() {
		return "", false, missingKey()
	}
	return key, false, nil
}

func missingKey() *apiError {
	return newAPIError(http.StatusUnauthorized, typeInvalidRequest, "missing_api_key", "",
		"You didn't provide an API key. Send your Azure OpenAI key as 'Authorization: Bearer KEY' or as an 'api-key' header.")
}

// clientKey returns the key the client sent, as 'api-key' or as
// 'Authorization: Bearer'.
func clientKey(h http.Header) string {
	if k := strings.TrimSpace(h.Get("Api-Key")); k != "" {
		return k
	}
	scheme, token, ok := strings.Cut(h.Get("Authorization"), " ")
	if ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(token)
	}
	return ""
}
