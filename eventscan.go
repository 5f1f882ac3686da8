package main

import (
	"bytes"
	"strconv"
)

// scanChunk decides on a stream chunk's JSON in one pass, without decoding
// it, for the chunks Azure sends: it reads what inspectChunkJSON reads from
// encoding/json, and says ok false for anything it does not read exactly
// the same way (a key in another case or given twice, a value of another
// type, invalid JSON), which then takes encoding/json's path. The fuzz
// target pins the two together.
func scanChunk(data []byte) (keep bool, usage *tokenUsage, ok bool) {
	s := jsonScanner{data: data}
	s.skipSpace()
	if !s.consume('{') {
		return false, nil, false
	}
	var seenChoices, seenUsage, seenResponse, choicesNull bool
	var topUsage, responseUsage *tokenUsage
	onlyAnnotations := true // every choice so far holds annotation fields only
	for first := true; ; first = false {
		s.skipSpace()
		if first && s.consume('}') {
			break
		}
		key, ok := s.plainKey()
		if !ok {
			return false, nil, false
		}
		s.skipSpace()
		if !s.consume(':') {
			return false, nil, false
		}
		s.skipSpace()
		switch {
		case string(key) == "choices" && !seenChoices:
			seenChoices = true
			if s.literal("null") {
				choicesNull = true
				break
			}
			annotations, ok := s.choices()
			if !ok {
				return false, nil, false
			}
			onlyAnnotations = annotations
		case string(key) == "usage" && !seenUsage:
			seenUsage = true
			if topUsage, ok = s.usageObject(2); !ok {
				return false, nil, false
			}
		case string(key) == "response" && !seenResponse:
			seenResponse = true
			if responseUsage, ok = s.responseObject(); !ok {
				return false, nil, false
			}
		case foldsTo(key, "choices") || foldsTo(key, "usage") || foldsTo(key, "response"):
			return false, nil, false // repeated, or in another case: encoding/json's rules
		default:
			if s.skipValue(1) != nil {
				return false, nil, false
			}
		}
		s.skipSpace()
		if s.consume(',') {
			continue
		}
		if !s.consume('}') {
			return false, nil, false
		}
		break
	}
	if s.atEnd() != nil {
		return false, nil, false
	}
	usage = topUsage
	if responseUsage != nil {
		usage = responseUsage
	}
	if !seenChoices || choicesNull || topUsage != nil {
		return true, usage, true
	}
	return !onlyAnnotations, usage, true
}

// foldsTo reports whether key matches name as encoding/json matches a key to a field.
func foldsTo(key []byte, name string) bool {
	return len(key) >= len(name) && len(key) <= 3*len(name) && bytes.EqualFold(key, []byte(name))
}

// plainKey reads an object key without escapes.
func (s *jsonScanner) plainKey() ([]byte, bool) {
	if s.peek() != '"' {
		return nil, false
	}
	start := s.pos
	escaped, err := s.skipString()
	if err != nil || escaped {
		return nil, false
	}
	return s.data[start+1 : s.pos-1], true
}

// literal consumes lit if it is next.
func (s *jsonScanner) literal(lit string) bool {
	if bytes.HasPrefix(s.data[s.pos:], []byte(lit)) {
		s.pos += len(lit)
		return true
	}
	return false
}

// choices reads an array of choice objects and reports whether every one
// holds annotation fields only.
func (s *jsonScanner) choices() (onlyAnnotations, ok bool) {
	if !s.consume('[') {
		return false, false
	}
	onlyAnnotations = true
	s.skipSpace()
	if s.consume(']') {
		return true, true
	}
	for {
		s.skipSpace()
		annotations, ok := s.choice()
		if !ok {
			return false, false
		}
		onlyAnnotations = onlyAnnotations && annotations
		s.skipSpace()
		if s.consume(',') {
			continue
		}
		return onlyAnnotations, s.consume(']')
	}
}

// choice reads one choice object: whether it holds annotation fields only.
func (s *jsonScanner) choice() (annotations, ok bool) {
	if !s.consume('{') {
		return false, false
	}
	annotations = true
	var seenFinish, seenLogprobs bool
	for first := true; ; first = false {
		s.skipSpace()
		if first && s.consume('}') {
			return annotations, true
		}
		key, ok := s.plainKey()
		if !ok {
			return false, false
		}
		s.skipSpace()
		if !s.consume(':') {
			return false, false
		}
		s.skipSpace()
		valueStart := s.pos
		if s.skipValue(3) != nil {
			return false, false
		}
		switch string(key) {
		case "finish_reason", "logprobs":
			// A map keeps the last of a repeated key: take encoding/json's path.
			finish := string(key) == "finish_reason"
			if finish && seenFinish || !finish && seenLogprobs {
				return false, false
			}
			seenFinish, seenLogprobs = seenFinish || finish, seenLogprobs || !finish
		}
		if !annotationField(string(key), s.data[valueStart:s.pos]) {
			annotations = false
		}
		s.skipSpace()
		if s.consume(',') {
			continue
		}
		return annotations, s.consume('}')
	}
}

// responseObject reads the Responses API's "response" member: its usage.
func (s *jsonScanner) responseObject() (*tokenUsage, bool) {
	if s.literal("null") {
		return nil, true
	}
	if !s.consume('{') {
		return nil, false
	}
	var usage *tokenUsage
	seen := false
	for first := true; ; first = false {
		s.skipSpace()
		if first && s.consume('}') {
			return usage, true
		}
		key, ok := s.plainKey()
		if !ok {
			return nil, false
		}
		s.skipSpace()
		if !s.consume(':') {
			return nil, false
		}
		s.skipSpace()
		switch {
		case string(key) == "usage" && !seen:
			seen = true
			if usage, ok = s.usageObject(3); !ok {
				return nil, false
			}
		case foldsTo(key, "usage"):
			return nil, false
		default:
			if s.skipValue(2) != nil {
				return nil, false
			}
		}
		s.skipSpace()
		if s.consume(',') {
			continue
		}
		return usage, s.consume('}')
	}
}

// usageObject reads a usage member: null, or an object of whole token
// counts. depth is how deep its members are, for the nesting limit.
func (s *jsonScanner) usageObject(depth int) (*tokenUsage, bool) {
	if s.literal("null") {
		return nil, true
	}
	if !s.consume('{') {
		return nil, false
	}
	u := &tokenUsage{}
	var seen [4]bool
	for first := true; ; first = false {
		s.skipSpace()
		if first && s.consume('}') {
			return u, true
		}
		key, ok := s.plainKey()
		if !ok {
			return nil, false
		}
		s.skipSpace()
		if !s.consume(':') {
			return nil, false
		}
		s.skipSpace()
		field := -1
		for i, name := range [...]string{"prompt_tokens", "completion_tokens", "input_tokens", "output_tokens"} {
			switch {
			case string(key) == name:
				field = i
			case foldsTo(key, name):
				return nil, false
			}
		}
		if field < 0 {
			if s.skipValue(depth) != nil {
				return nil, false
			}
		} else {
			if seen[field] {
				return nil, false
			}
			seen[field] = true
			start := s.pos
			if s.skipValue(depth) != nil {
				return nil, false
			}
			if raw := s.data[start:s.pos]; string(raw) != "null" {
				n, err := strconv.ParseInt(string(raw), 10, 64)
				if err != nil {
					return nil, false // a fraction, an exponent, a string: encoding/json's error
				}
				*[...]*int64{&u.PromptTokens, &u.CompletionTokens, &u.InputTokens, &u.OutputTokens}[field] = n
			}
		}
		s.skipSpace()
		if s.consume(',') {
			continue
		}
		return u, s.consume('}')
	}
}
