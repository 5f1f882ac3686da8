package main

import (
	"bytes"
)

// A client with token limits is charged what Azure reports in usage. A chat
// stream reports it only when the request asks (stream_options.include_usage),
// so for such a client the proxy asks for it and hides from the client what
// asking adds, so that counting never changes what the client sees:
//   - the usage chunk (empty choices) before [DONE] is dropped;
//   - the "usage": null every other chunk then carries is removed.
//
// Azure documents stream_options from api-version 2024-09-01-preview (in the
// 2024-10-21 GA spec, chatCompletionStreamOptions, and on the v1 API); a
// backend on an older dated api-version is not asked, and its streams are
// charged by estimate (chargedUsage).

// askStreamUsage plans, for a chat call of a client with token limits, the
// edits that ask Azure for its stream's usage. A body whose stream options
// the proxy cannot edit (a key given twice) is refused: passed as it is, its
// stream would go uncounted.
func askStreamUsage(call *upstreamCall, body []byte) *apiError {
	c := call.outcome.client
	if c == nil || !c.limits.countsTokens() || call.route.op != "chat/completions" ||
		call.route.kind != routeDeployment && call.route.kind != routeEngine || len(body) == 0 {
		return nil
	}
	splices, err := streamUsageSplices(body)
	if dup, ok := err.(*duplicateKeyError); ok {
		return badRequest("invalid_json", dup.key, "The JSON body "+dup.Error()+" (keys are matched in any case).")
	}
	call.usageSplices = splices
	return nil
}

// streamUsageSplices returns the edits that make a chat body ask for its
// stream's usage: nil when it is not a stream, asks already, or holds stream
// options of another type (Azure answers those itself).
func streamUsageSplices(body []byte) ([]bodySplice, error) {
	stream, err := findMember(body, "stream")
	if err != nil || !stream.found || string(body[stream.start:stream.end]) != "true" {
		return nil, err
	}
	opts, err := findMember(body, "stream_options")
	if err != nil {
		return nil, err
	}
	switch {
	case !opts.found:
		open := bytes.IndexByte(body, '{') + 1 // the body is an object with members: stream is one
		return []bodySplice{{open, open, []byte(`"stream_options":{"include_usage":true},`)}}, nil
	case string(body[opts.start:opts.end]) == "null":
		return []bodySplice{{opts.start, opts.end, []byte(`{"include_usage":true}`)}}, nil
	case body[opts.start] != '{':
		return nil, nil
	}
	object := body[opts.start:opts.end]
	include, err := findMember(object, "include_usage")
	switch {
	case err != nil:
		return nil, err
	case !include.found:
		at := opts.start + 1
		with := `"include_usage":true,`
		if len(bytes.TrimSpace(object[1:len(object)-1])) == 0 {
			with = `"include_usage":true`
		}
		return []bodySplice{{at, at, []byte(with)}}, nil
	}
	switch value := string(object[include.start:include.end]); value {
	case "false", "null":
		return []bodySplice{{opts.start + include.start, opts.start + include.end, []byte("true")}}, nil
	}
	return nil, nil // true: the client asked itself; anything else: Azure answers it
}

// asksStreamUsage reports whether an attempt at b asks Azure for usage the
// client did not ask for.
func (c *upstreamCall) asksStreamUsage(b *backend) bool {
	return c.usageSplices != nil && reportsStreamUsage(b)
}

// reportsStreamUsage reports whether b's api-version takes stream_options.
func reportsStreamUsage(b *backend) bool {
	return b.v1() || b.apiVersion >= "2024-09-01"
}

// hideAskedUsage undoes, in one event of a stream whose usage the proxy asked
// for, what asking added: drop is true for the usage chunk, and out is the
// event without its "usage" member (a slice of event, or of scratch).
func hideAskedUsage(event []byte, scratch *[]byte) (out []byte, drop bool) {
	if !bytes.Contains(event, []byte(`"usage"`)) {
		return event, false
	}
	// Azure's chunks are one "data:" line; anything else passes as it is.
	line, rest := cutLine(event)
	if len(bytes.Trim(rest, "\r\n")) > 0 || !bytes.HasPrefix(line, []byte("data:")) {
		return event, false
	}
	prefix := len("data:")
	if len(line) > prefix && line[prefix] == ' ' {
		prefix++
	}
	data := line[prefix:]
	usage, ok := memberSpan(data, "usage")
	if !ok {
		return event, false
	}
	if string(data[usage.valueStart:usage.valueEnd]) != "null" {
		if choices, err := findMember(data, "choices"); err == nil && (!choices.found || emptyArray(data[choices.start:choices.end])) {
			return nil, true // the usage chunk
		}
	}
	cutStart, cutEnd := usage.removal(data)
	out = append((*scratch)[:0], event[:prefix]...)
	out = append(out, data[:cutStart]...)
	out = append(out, data[cutEnd:]...)
	out = append(out, event[len(line):]...)
	*scratch = out
	return out, false
}

func emptyArray(v []byte) bool {
	return len(v) >= 2 && v[0] == '[' && len(bytes.TrimSpace(v[1:len(v)-1])) == 0
}

// jsonMemberSpan is where a top-level member of a JSON object lies.
type jsonMemberSpan struct {
	keyStart, valueStart, valueEnd int
	prevValueEnd                   int // the end of the member before it; -1 if it is the first
	nextKeyStart                   int // the start of the member after it; -1 if it is the last
}

// removal is the span to cut to remove the member with its comma.
func (m jsonMemberSpan) removal(data []byte) (start, end int) {
	switch {
	case m.nextKeyStart >= 0:
		return m.keyStart, m.nextKeyStart
	case m.prevValueEnd >= 0:
		return m.prevValueEnd, m.valueEnd
	}
	return m.keyStart, m.valueEnd
}

// memberSpan finds the top-level member key (spelled exactly so, without
// escapes) of the JSON object data. ok is false when it is not there, or
// data is not an object the scanner reads.
func memberSpan(data []byte, key string) (span jsonMemberSpan, ok bool) {
	s := jsonScanner{data: data}
	s.skipSpace()
	if !s.consume('{') {
		return span, false
	}
	prevEnd := -1
	for {
		s.skipSpace()
		keyStart := s.pos
		if ok {
			span.nextKeyStart = keyStart
			return span, true
		}
		if s.peek() != '"' {
			return span, false
		}
		if escaped, err := s.skipString(); err != nil || escaped {
			return span, false
		}
		name := data[keyStart+1 : s.pos-1]
		s.skipSpace()
		if !s.consume(':') {
			return span, false
		}
		s.skipSpace()
		valueStart := s.pos
		if s.skipValue(1) != nil {
			return span, false
		}
		valueEnd := s.pos
		if string(name) == key {
			span, ok = jsonMemberSpan{keyStart, valueStart, valueEnd, prevEnd, -1}, true
		}
		prevEnd = valueEnd
		s.skipSpace()
		if !s.consume(',') {
			return span, ok && s.consume('}')
		}
	}
}
