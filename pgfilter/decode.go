package pgfilter

import "github.com/jackc/pgx/v5/pgproto3"

// decodeFrontend returns an empty client message of the given type, for a
// hook that wants to decode a frame body (nil for an unknown type).
func decodeFrontend(typ byte) pgproto3.FrontendMessage {
	switch typ {
	case 'B':
		return &pgproto3.Bind{}
	case 'C':
		return &pgproto3.Close{}
	case 'D':
		return &pgproto3.Describe{}
	case 'E':
		return &pgproto3.Execute{}
	case 'F':
		return &pgproto3.FunctionCall{}
	case 'H':
		return &pgproto3.Flush{}
	case 'P':
		return &pgproto3.Parse{}
	case 'Q':
		return &pgproto3.Query{}
	case 'S':
		return &pgproto3.Sync{}
	case 'X':
		return &pgproto3.Terminate{}
	case 'd':
		return &pgproto3.CopyData{}
	case 'c':
		return &pgproto3.CopyDone{}
	case 'f':
		return &pgproto3.CopyFail{}
	}
	return nil
}

// DecodeClient decodes a client-to-server frame. The result may alias
// m.Body: copy what you keep.
func (m *Message) DecodeClient() (pgproto3.FrontendMessage, error) {
	msg := decodeFrontend(m.Type)
	if msg == nil {
		return nil, &unknownTypeError{typ: m.Type}
	}
	if err := msg.Decode(m.Body); err != nil {
		return nil, err
	}
	return msg, nil
}

type unknownTypeError struct{ typ byte }

func (e *unknownTypeError) Error() string { return "unknown message type " + string(rune(e.typ)) }
