package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// clientKeys are the keys the proxy's own clients must present (as
// 'Authorization: Bearer' or 'api-key'), each with the client it names. Only
// their SHA-256 digests are kept, and a presented key is compared with every
// one in constant time.
type clientKeys struct {
	digests [][sha256.Size]byte
	clients []*client // for each digest
	named   []*client // the named clients, in the order configured
}

// lookup returns the client whose key this is, or nil.
func (k *clientKeys) lookup(key string) *client {
	if key == "" {
		return nil
	}
	d := sha256.Sum256([]byte(key))
	found, index := 0, 0
	for i, want := range k.digests {
		match := subtle.ConstantTimeCompare(d[:], want[:])
		index = subtle.ConstantTimeSelect(match, i, index)
		found |= match
	}
	if found == 0 {
		return nil
	}
	return k.clients[index]
}

func (k *clientKeys) allows(key string) bool { return k.lookup(key) != nil }

// loadClientKeys reads AZURE_OPENAI_PROXY_KEYS (comma-separated),
// AZURE_OPENAI_PROXY_KEYS_FILE (one per line, "name: key" to name it; blank
// lines and # comments skipped) and the configuration file's clients, as one
// set: names unique, and no key given to two clients. nil when none names a
// key: then clients are not checked.
func loadClientKeys(getenv func(string) string, files *sourceFiles, configured []clientSpec) (*clientKeys, error) {
	var specs []clientSpec
	unnamed := &client{}
	listed := getenv("AZURE_OPENAI_PROXY_KEYS")
	for k := range strings.SplitSeq(listed, ",") {
		if k = strings.TrimSpace(k); k != "" {
			specs = append(specs, clientSpec{client: unnamed, key: k, source: "AZURE_OPENAI_PROXY_KEYS"})
		}
	}
	if listed != "" && len(specs) == 0 {
		// Set, but to nothing: refused, or it would turn client keys off.
		return nil, settingError("AZURE_OPENAI_PROXY_KEYS", "is set but holds no key")
	}
	if path := strings.TrimSpace(getenv("AZURE_OPENAI_PROXY_KEYS_FILE")); path != "" {
		fromFile, err := readKeysFile(path, files, unnamed)
		if err != nil {
			return nil, err
		}
		specs = append(specs, fromFile...)
	}
	specs = append(specs, configured...)
	if len(specs) == 0 {
		return nil, nil
	}
	return newClientKeys(specs)
}

// readKeysFile reads a keys file's keys, named or not.
func readKeysFile(path string, files *sourceFiles, unnamed *client) ([]clientSpec, error) {
	const setting = "AZURE_OPENAI_PROXY_KEYS_FILE"
	data, err := files.read(path, true)
	if err != nil {
		return nil, settingError(setting, "cannot read %s: %v", path, unwrapPathError(err))
	}
	var specs []clientSpec
	lines := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; lines.Scan(); n++ {
		line := strings.TrimSpace(lines.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		spec := clientSpec{client: unnamed, source: fmt.Sprintf("%s line %d", setting, n)}
		var name string
		if name, spec.key = keysFileLine(line); name != "" {
			spec.client = &client{name: name}
		}
		if spec.key == "" {
			return nil, settingError(setting, "%s line %d names a client but no key", path, n)
		}
		specs = append(specs, spec)
	}
	if len(specs) == 0 {
		return nil, settingError(setting, "%s holds no key", path)
	}
	return specs, nil
}

// newClientKeys checks and indexes every client's key. Only a repeated
// unnamed key is harmless (it is dropped); errors name the clients, never a key.
func newClientKeys(specs []clientSpec) (*clientKeys, error) {
	ck := &clientKeys{}
	names := map[string]string{} // client name: where it was named
	holders := map[[sha256.Size]byte]clientSpec{}
	for _, s := range specs {
		if name := s.client.name; name != "" {
			if where, taken := names[name]; taken {
				return nil, settingError(s.source, "names the client %q, which %s names already", name, where)
			}
			names[name] = s.source
		}
		d := sha256.Sum256([]byte(s.key))
		if earlier, seen := holders[d]; seen {
			if earlier.client.name == "" && s.client.name == "" {
				continue
			}
			return nil, settingError(s.source, "gives %s the key %s gives %s: each client needs a key of its own",
				describeClient(s.client), earlier.source, describeClient(earlier.client))
		}
		holders[d] = s
		ck.digests = append(ck.digests, d)
		ck.clients = append(ck.clients, s.client)
		if s.client.name != "" {
			ck.named = append(ck.named, s.client)
		}
	}
	return ck, nil
}

func describeClient(c *client) string {
	if c.name == "" {
		return "an unnamed client"
	}
	return "client " + strconv.Quote(c.name)
}

// authorize checks the client's key and returns the key it brings for Azure:
// "" when clients present proxy keys (which go no further) or none, with the
// client the proxy key names. A request that no backend could serve without
// the client's key is refused here, before its body is read. ephemeral says
// the key is a WebRTC ephemeral key, which goes to Azure as the Bearer token,
// with no key of the proxy's.
func authorize(table *routeTable, h http.Header, rt route) (key string, ephemeral bool, who *client, e *apiError) {
	key = clientKey(h)
	if key == "" && rt.upgrade {
		key, _ = subprotocolKey(h)
	}
	if table.clientKeys != nil {
		who = table.clientKeys.lookup(key)
	}
	if rt.clientBearer && h.Get("Api-Key") == "" && key != "" && who == nil {
		// The browser's SDP offer, with the ephemeral key a client the
		// proxy let in has minted. A proxy key takes the usual way.
		return key, true, nil, nil
	}
	if table.clientKeys != nil {
		if who == nil {
			return "", false, nil, newAPIError(http.StatusUnauthorized, typeInvalidRequest, "invalid_api_key", "",
				"Incorrect API key provided: this proxy accepts only its own client keys (as 'Authorization: Bearer KEY' or 'api-key').")
		}
		return "", false, who, nil // a proxy key, not an Azure key: it goes no further
	}
	if key == "" && !table.anyCredential() {
		return "", false, nil, missingKey()
	}
	return key, false, nil, nil
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
