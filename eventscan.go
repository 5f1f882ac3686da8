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
	var seenChoices, seenUsage, seenResponse, choicesNull bool
	var topUsage, responseUsage *tokenUsage
	onlyAnnotations := true // every choice holds annotation fields only
	ok = s.members(func(key []byte) bool {
		var ok bool
		switch {
		case string(key) == "choices" && !seenChoices:
			seenChoices = true
			if choicesNull = s.literal("null"); choicesNull {
				return true
			}
			onlyAnnotations, ok = s.choices()
			return ok
		case string(key) == "usage" && !seenUsage:
			seenUsage = true
			topUsage, ok = s.usageObject(2)
			return ok
		case string(key) == "response" && !seenResponse:
			seenResponse = true
			responseUsage, ok = s.responseObject()
			return ok
		case foldsTo(key, "choices") || foldsTo(key, "usage") || foldsTo(key, "response"):
			return false // repeated, or in another case: encoding/json's rules
		}
		return s.skipValue(1) == nil
	})
	if !ok || s.atEnd() != nil {
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

// members reads an object whose members have plain keys (no escapes),
// calling value for each with the scanner at the member's value; value
// consumes it and reports whether to go on. It reports whether the object
// was read whole.
func (s *jsonScanner) members(value func(key []byte) bool) bool {
	if !s.consume('{') {
		return false
	}
	for first := true; ; first = false {
		s.skipSpace()
		if first && s.consume('}') {
			return true
		}
		key, ok := s.plainKey()
		if !ok {
			return false
		}
		s.skipSpace()
		if !s.consume(':') {
			return false
		}
		s.skipSpace()
		if !value(key) {
			return false
		}
		s.skipSpace()
		if s.consume(',') {
			continue
		}
		return s.consume('}')
	}
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
	annotations = true
	var seenFinish, seenLogprobs bool
	ok = s.members(func(key []byte) bool {
		valueStart := s.pos
		if s.skipValue(3) != nil {
			return false
		}
		switch string(key) {
		case "finish_reason", "logprobs":
			// A map keeps the last of a repeated key: take encoding/json's path.
			finish := string(key) == "finish_reason"
			if finish && seenFinish || !finish && seenLogprobs {
				return false
			}
			seenFinish, seenLogprobs = seenFinish || finish, seenLogprobs || !finish
		}
		if !annotationField(string(key), s.data[valueStart:s.pos]) {
			annotations = false
		}
		return true
	})
	return annotations, ok
}

// responseObject reads the Responses API's "response" member: its usage.
func (s *jsonScanner) responseObject() (*tokenUsage, bool) {
	if s.literal("null") {
		return nil, true
	}
	var usage *tokenUsage
	seen := false
	ok := s.members(func(key []byte) bool {
		var ok bool
		switch {
		case string(key) == "usage" && !seen:
			seen = true
			usage, ok = s.usageObject(3)
			return ok
		case foldsTo(key, "usage"):
			return false
		}
		return s.skipValue(2) == nil
	})
	return usage, ok
}

// usageFields are tokenUsage's JSON names, in the order usageObject sets them.
var usageFields = [...]string{"prompt_tokens", "completion_tokens", "input_tokens", "output_tokens"}

// usageObject reads a usage member: null, or an object of whole token
// counts. depth is how deep its members are, for the nesting limit.
func (s *jsonScanner) usageObject(depth int) (*tokenUsage, bool) {
	if s.literal("null") {
		return nil, true
	}
	u := &tokenUsage{}
	counts := [...]*int64{&u.PromptTokens, &u.CompletionTokens, &u.InputTokens, &u.OutputTokens}
	var seen [len(usageFields)]bool
	ok := s.members(func(key []byte) bool {
		field := -1
		for i, name := range usageFields {
			switch {
			case string(key) == name:
				field = i
			case foldsTo(key, name):
				return false
			}
		}
		start := s.pos
		if s.skipValue(depth) != nil {
			return false
		}
		if field < 0 {
			return true
		}
		if seen[field] {
			return false
		}
		seen[field] = true
		if raw := s.data[start:s.pos]; string(raw) != "null" {
			n, err := strconv.ParseInt(string(raw), 10, 64)
			if err != nil {
				return false // a fraction, an exponent, a string: encoding/json's error
			}
			*counts[field] = n
		}
		return true
	})
	if !ok {
		return nil, false
	}
	return u, true
}
