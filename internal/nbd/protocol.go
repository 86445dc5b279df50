package nbd

// Protocol constants (the NBD project's proto.md), shared by the client
// and the server.
const (
	nbdMagic      = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic      = 0x49484156454f5054 // "IHAVEOPT"
	optReplyMagic = 0x3e889045565a9

	flagFixedNewstyle = 1 << 0 // handshake flags
	flagNoZeroes      = 1 << 1
	clientFixed       = 1 << 0 // client flags
	clientNoZeros     = 1 << 1

	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10

	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4
	repErrBit      = 1 << 31 // error replies: ERR_UNSUP +1, ERR_POLICY +2, ERR_INVALID +3

	infoExport    = 0
	infoBlockSize = 3

	requestMagic         = 0x25609513
	simpleReplyMagic     = 0x67446698
	structuredReplyMagic = 0x668e33ef

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
	cmdFlagReqOne  = 1 << 3 // block status: one extent is enough

	replyFlagDone    = 1 << 0
	replyNone        = 0
	replyOffsetData  = 1
	replyOffsetHole  = 2
	replyBlockStatus = 5
	replyErrorBit    = 1 << 15 // NBD_REPLY_TYPE_ERROR is replyErrorBit + 1

	transFlagHasFlags     = 1 << 0
	transFlagReadOnly     = 1 << 1
	transFlagSendFlush    = 1 << 2
	transFlagWriteZeros   = 1 << 6
	transFlagSendDF       = 1 << 7
	transFlagCanMultiConn = 1 << 8
	transFlagSendCache    = 1 << 10

	// Errors a server answers a command with (errno values).
	errPerm     = 1
	errIO       = 5
	errInval    = 22
	errOverflow = 75
	errNotSup   = 95
)

// Block status flags of the base:allocation context.
const (
	StateHole = 1 << 0 // not allocated
	StateZero = 1 << 1 // reads as zeros
)

// Extent is a run of bytes with the same status flags of one context.
type Extent struct {
	Off, Len int64
	Flags    uint32
}

// End is where the extent ends.
func (e Extent) End() int64 { return e.Off + e.Len }
