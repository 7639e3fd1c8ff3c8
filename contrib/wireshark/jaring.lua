-- jaring.lua: a Wireshark dissector for jaring's protocols.
--
--   TIME          (45000)          TIME / QUIT lines, JAM hh:mm:ss replies   docs/time-protocol.md
--   echo          (10000, 32444;   bytes per direction                       docs/echo-protocol.md
--                  TLS: 10443)
--   chat          (8889, 8899)     command lines; JSON replies and events    docs/chat-protocol.md
--                                  ending CR LF CR LF
--   federation    (9889, 9899)     one JSON frame per LF-terminated line     docs/federation.md
--
-- Install: mkdir -p ~/.local/lib/wireshark/plugins && cp jaring.lua ~/.local/lib/wireshark/plugins/
-- Or for one run: tshark -X lua_script:jaring.lua -r capture.pcapng
--
-- TLS: time, chat and federation ports take TLS and plaintext on the same port (a TLS client's
-- first byte is 0x16), the echo TLS port only TLS. This dissector hands TLS records to Wireshark's
-- TLS dissector and gets the decrypted bytes back when Wireshark has the key log
-- (tls.keylog_file: what jaring writes to $SSLKEYLOGFILE).
--
-- Written for Wireshark 4.0 (Lua 5.2: no utf8 library). Every field is under "jaring.", every
-- port is a preference (Edit > Preferences > Protocols > jaring, or tshark -o jaring.NAME:VALUE).
-- Nothing in here throws on malformed input: what does not follow the protocol is an expert info.

local jaring = Proto("jaring", "jaring lab protocols")

---------------------------------------------------------------------------------------------------
-- Limits (the protocols' defaults; servers may be configured with larger ones).

-- TIME request lines: crates/proto/src/time.rs DEFAULT_MAX_LINE.
local TIME_MAX_LINE = 1024
-- Chat request lines: crates/proto/src/chat/mod.rs DEFAULT_MAX_LINE.
local CHAT_MAX_LINE = 64 * 1024
-- Chat replies: max_reply_bytes (1 MiB) plus the CR LF CR LF.
local CHAT_MAX_REPLY = 1024 * 1024 + 4
-- Federation frames: crates/proto/src/federation/mod.rs DEFAULT_MAX_FRAME.
local FED_MAX_FRAME = 512 * 1024
-- How much this dissector buffers for one PDU before giving up on finding its end (a preference).
local DEFAULT_MAX_PDU = 2 * 1024 * 1024
-- How many PDUs the Info column names one by one before it only counts them.
local INFO_MAX_ITEMS = 4

---------------------------------------------------------------------------------------------------
-- Preferences

jaring.prefs.time_ports = Pref.range("TIME ports", "45000", "TCP ports of TIME servers (plaintext or TLS)", 65535)
jaring.prefs.echo_ports = Pref.range("Echo ports", "10000,32444", "TCP ports of plaintext echo servers", 65535)
jaring.prefs.echo_tls_ports = Pref.range("Echo TLS ports", "10443", "TCP ports of TLS-only echo servers", 65535)
jaring.prefs.chat_ports = Pref.range("Chat client ports", "8889,8899", "TCP client ports of chat realms (plaintext or TLS)", 65535)
jaring.prefs.fed_ports = Pref.range("Federation link ports", "9889,9899", "TCP server-to-server ports of chat realms (plaintext or TLS)", 65535)
jaring.prefs.reveal_secrets = Pref.bool("Show tokens and passwords", false,
    "Show chat tokens and passwords in full (masked by default: a capture is often shared)")
jaring.prefs.max_pdu = Pref.uint("Largest PDU to reassemble", DEFAULT_MAX_PDU,
    "Bytes buffered while looking for the end of one line or JSON reply")

---------------------------------------------------------------------------------------------------
-- Fields

local F = {
    service = ProtoField.string("jaring.service", "Service"),
    direction = ProtoField.string("jaring.direction", "Direction", base.ASCII, "to server / from server"),
    tls = ProtoField.bool("jaring.tls", "Inside TLS"),

    time_request = ProtoField.string("jaring.time.request", "Request", base.UNICODE, "The request line, without its line end"),
    time_kind = ProtoField.string("jaring.time.kind", "Request kind", base.ASCII, "TIME, QUIT, blank or unknown"),
    time_reply = ProtoField.string("jaring.time.reply", "Reply", base.UNICODE, "The reply line, without its CR LF"),
    time_clock = ProtoField.string("jaring.time.clock", "Time of day", base.ASCII, "hh:mm:ss of a JAM reply"),
    time_error = ProtoField.string("jaring.time.error", "Error", base.UNICODE, "The text of an ERR line"),

    echo_bytes = ProtoField.uint32("jaring.echo.bytes", "Bytes", base.DEC),
    echo_total = ProtoField.uint64("jaring.echo.total", "Bytes so far in this direction", base.DEC),
    echo_data = ProtoField.bytes("jaring.echo.data", "Data"),

    chat_kind = ProtoField.string("jaring.chat.kind", "Kind", base.ASCII, "request, live (a line of a live group session), reply, event or raw (classic group mode text)"),
    chat_cmd = ProtoField.string("jaring.chat.cmd", "Command", base.UNICODE),
    chat_token = ProtoField.string("jaring.chat.token", "Token", base.ASCII, "Masked unless the preference reveals it"),
    chat_user = ProtoField.string("jaring.chat.user", "User", base.UNICODE),
    chat_password = ProtoField.string("jaring.chat.password", "Password", base.UNICODE, "Masked unless the preference reveals it"),
    chat_target = ProtoField.string("jaring.chat.target", "Target", base.UNICODE, "The user, peer or group a command names"),
    chat_message = ProtoField.string("jaring.chat.message", "Message", base.UNICODE, "Text sent: send, sendgroup, a live session line"),
    chat_arg = ProtoField.string("jaring.chat.arg", "Argument", base.UNICODE, "Other parameters: SINCE, N, BEFORE, AFTER, cursors"),
    chat_status = ProtoField.string("jaring.chat.status", "Status", base.ASCII, "OK or ERROR"),
    chat_event = ProtoField.string("jaring.chat.event", "Event", base.ASCII),
    chat_text = ProtoField.string("jaring.chat.text", "Reply message", base.UNICODE, "The \"message\" of a reply (an ERROR's reason)"),
    chat_group = ProtoField.string("jaring.chat.group", "Group", base.UNICODE),
    chat_from = ProtoField.string("jaring.chat.from", "From", base.UNICODE),
    chat_msg = ProtoField.string("jaring.chat.msg", "Message text", base.UNICODE, "The \"msg\" of an event"),
    chat_seq = ProtoField.uint64("jaring.chat.seq", "Seq", base.DEC),
    chat_id = ProtoField.string("jaring.chat.id", "Message id", base.ASCII),
    chat_reason = ProtoField.string("jaring.chat.reason", "Reason", base.UNICODE),
    chat_raw = ProtoField.string("jaring.chat.raw", "Raw text", base.UNICODE, "Classic group mode text"),
    chat_json_len = ProtoField.uint32("jaring.chat.json_len", "JSON length", base.DEC),

    fed_kind = ProtoField.string("jaring.fed.kind", "Frame kind", base.ASCII, "The \"t\" key"),
    fed_realm = ProtoField.string("jaring.fed.realm", "Realm", base.UNICODE),
    fed_to = ProtoField.string("jaring.fed.to", "To", base.UNICODE),
    fed_from = ProtoField.string("jaring.fed.from", "From", base.UNICODE),
    fed_user = ProtoField.string("jaring.fed.user", "User", base.UNICODE),
    fed_group = ProtoField.string("jaring.fed.group", "Group", base.UNICODE),
    fed_id = ProtoField.string("jaring.fed.id", "Message id", base.ASCII),
    fed_q = ProtoField.uint64("jaring.fed.q", "Query", base.DEC),
    fed_seq = ProtoField.uint64("jaring.fed.seq", "Seq", base.DEC),
    fed_body = ProtoField.string("jaring.fed.body", "Body", base.UNICODE),
    fed_reason = ProtoField.string("jaring.fed.reason", "Reason", base.UNICODE),
    fed_error = ProtoField.string("jaring.fed.error", "Error", base.UNICODE),
    fed_len = ProtoField.uint32("jaring.fed.len", "Frame length", base.DEC),
}
jaring.fields = {}
for _, field in pairs(F) do
    table.insert(jaring.fields, field)
end

local E = {
    too_long = ProtoExpert.new("jaring.too_long", "Longer than the protocol's limit",
        expert.group.PROTOCOL, expert.severity.WARN),
    unterminated = ProtoExpert.new("jaring.unterminated", "No end found within the reassembly limit",
        expert.group.PROTOCOL, expert.severity.ERROR),
    incomplete = ProtoExpert.new("jaring.incomplete", "Incomplete PDU (not reassembled)",
        expert.group.REASSEMBLE, expert.severity.NOTE),
    unknown = ProtoExpert.new("jaring.unknown", "Not a request of this protocol",
        expert.group.PROTOCOL, expert.severity.WARN),
    not_utf8 = ProtoExpert.new("jaring.not_utf8", "Not valid UTF-8",
        expert.group.PROTOCOL, expert.severity.WARN),
    bare_lf = ProtoExpert.new("jaring.bare_lf", "Line ends with a bare LF (accepted; the protocol says CR LF)",
        expert.group.SEQUENCE, expert.severity.NOTE),
    bad_json = ProtoExpert.new("jaring.bad_json", "Not a JSON object",
        expert.group.PROTOCOL, expert.severity.ERROR),
    bad_reply = ProtoExpert.new("jaring.bad_reply", "Not a reply of this protocol",
        expert.group.PROTOCOL, expert.severity.ERROR),
    server_error = ProtoExpert.new("jaring.server_error", "The server refused the request",
        expert.group.RESPONSE_CODE, expert.severity.NOTE),
    -- Protocol violations above are PROTOCOL, not MALFORMED: `_ws.malformed` then only ever
    -- means that a dissector threw, as here.
    internal = ProtoExpert.new("jaring.internal", "jaring.lua could not dissect this (a bug: please report it)",
        expert.group.MALFORMED, expert.severity.ERROR),
}
jaring.experts = {}
for _, e in pairs(E) do
    table.insert(jaring.experts, e)
end

local f_tcp_stream = Field.new("tcp.stream")

local json_dissector = Dissector.get("json")
local tls_dissector = Dissector.get("tls")

---------------------------------------------------------------------------------------------------
-- Ports

-- Parses a range preference ("8889,8899", "9000-9010") into a list of {lo, hi}.
local function parse_range(text)
    local out = {}
    for part in tostring(text or ""):gmatch("[^,%s]+") do
        local lo, hi = part:match("^(%d+)%-(%d+)$")
        if lo then
            table.insert(out, { tonumber(lo), tonumber(hi) })
        else
            local n = tonumber(part)
            if n then
                table.insert(out, { n, n })
            end
        end
    end
    return out
end

local function in_range(ranges, port)
    for _, r in ipairs(ranges) do
        if port >= r[1] and port <= r[2] then
            return true
        end
    end
    return false
end

-- service name -> list of ranges; filled by register_ports.
local services = {}
local SERVICE_ORDER = { "time", "echo", "echo_tls", "chat", "fed" }

-- (Re)registers the dissector on the ports of the preferences, in TCP (where it finds TLS by its
-- first byte) and in TLS (which hands it the decrypted application data).
local function register_ports()
    local tcp = DissectorTable.get("tcp.port")
    local tls = DissectorTable.get("tls.port")
    tcp:remove_all(jaring)
    tls:remove_all(jaring)
    services = {
        time = parse_range(jaring.prefs.time_ports),
        echo = parse_range(jaring.prefs.echo_ports),
        echo_tls = parse_range(jaring.prefs.echo_tls_ports),
        chat = parse_range(jaring.prefs.chat_ports),
        fed = parse_range(jaring.prefs.fed_ports),
    }
    for _, name in ipairs(SERVICE_ORDER) do
        for _, r in ipairs(services[name]) do
            for port = r[1], r[2] do
                tcp:add(port, jaring)
                tls:add(port, jaring)
            end
        end
    end
end

-- Which service a packet belongs to, and whether it goes to the server.
local function classify(pinfo)
    for _, name in ipairs(SERVICE_ORDER) do
        local ranges = services[name]
        if in_range(ranges, pinfo.dst_port) then
            return name, true
        end
        if in_range(ranges, pinfo.src_port) then
            return name, false
        end
    end
    return nil, nil
end

---------------------------------------------------------------------------------------------------
-- Per-capture state. Decisions that depend on what came before (a chat connection in a live group
-- session) are made on the first pass and remembered per PDU, so a later visit of a packet (the
-- GUI, tshark -2) decodes it exactly as the first did.

local streams = {} -- tcp.stream -> table
local decided = {} -- "frame:offset:tls" -> value

function jaring.init()
    streams = {}
    decided = {}
end

local function stream_state(pinfo)
    local fi = f_tcp_stream()
    local key = fi and fi.value or "?"
    local st = streams[key]
    if not st then
        st = {}
        streams[key] = st
    end
    return st
end

-- The length of the tvb being dissected: one frame may be dissected twice at offset 0 (a
-- reassembled PDU that ends in it, then the rest of its bytes), so PDUs are told apart by it too.
local current_len = 0

-- Returns the value remembered for this PDU, or computes it with `compute` on the first pass.
local function remember(pinfo, offset, inside_tls, compute)
    local key = pinfo.number .. ":" .. offset .. ":" .. current_len .. ":" .. (inside_tls and "t" or "p")
    if pinfo.visited and decided[key] ~= nil then
        return decided[key]
    end
    local value = compute()
    decided[key] = value
    return value
end

---------------------------------------------------------------------------------------------------
-- Text helpers (Lua 5.2: no utf8 library)

local function utf8_encode(cp)
    if cp < 0x80 then
        return string.char(cp)
    elseif cp < 0x800 then
        return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
    elseif cp < 0x10000 then
        return string.char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
    else
        return string.char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
            0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
    end
end

local function valid_utf8(s)
    local i, n = 1, #s
    while i <= n do
        local c = s:byte(i)
        local extra, min
        if c < 0x80 then
            extra = 0
        elseif c >= 0xC2 and c <= 0xDF then
            extra, min = 1, 0x80
        elseif c >= 0xE0 and c <= 0xEF then
            extra, min = 2, 0x800
        elseif c >= 0xF0 and c <= 0xF4 then
            extra, min = 3, 0x10000
        else
            return false
        end
        if extra > 0 then
            if i + extra > n then
                return false
            end
            local cp = c % (2 ^ (6 - extra))
            for k = 1, extra do
                local b = s:byte(i + k)
                if b < 0x80 or b > 0xBF then
                    return false
                end
                cp = cp * 64 + (b - 0x80)
            end
            if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then
                return false
            end
        end
        i = i + 1 + extra
    end
    return true
end

-- Trailing spaces and tabs are not part of any parameter (the classic client ends lines with one).
local function trim_end(s)
    return (s:gsub("[ \t]+$", ""))
end

-- The chat protocol's parameter split: skip leading spaces, the word ends at the next space.
local function next_param(s)
    s = s:gsub("^ +", "")
    if s == "" then
        return nil, ""
    end
    local i = s:find(" ", 1, true)
    if i then
        return s:sub(1, i - 1), s:sub(i + 1)
    end
    return s, ""
end

local function mask(secret)
    if jaring.prefs.reveal_secrets then
        return secret
    end
    if #secret <= 8 then
        return string.rep("*", #secret)
    end
    -- The first four characters tell a capture's tokens apart and give nothing useful away.
    return secret:sub(1, 4) .. "\xe2\x80\xa6(masked)"
end

-- Shortens text for the Info column.
local function excerpt(s, n)
    n = n or 40
    s = s:gsub("[%c]", ".")
    if #s > n then
        return s:sub(1, n) .. "..."
    end
    return s
end

---------------------------------------------------------------------------------------------------
-- A small JSON reader: the top-level keys of one object, each with its value (strings decoded,
-- numbers, true, false and null as their text, nested objects and arrays as their raw text).
-- Returns nil and the reason when the text is not one JSON object.

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function json_object(s)
    local i, n = 1, #s
    local function ws()
        local j = s:find("[^ \t\r\n]", i)
        i = j or n + 1
    end
    local function str()
        -- s[i] is the opening quote
        local buf = {}
        i = i + 1
        while true do
            local j = s:find('["\\]', i)
            if not j then
                return nil, "unterminated string"
            end
            table.insert(buf, s:sub(i, j - 1))
            if s:sub(j, j) == '"' then
                i = j + 1
                return table.concat(buf)
            end
            local e = s:sub(j + 1, j + 1)
            if e == "u" then
                local cp = tonumber(s:sub(j + 2, j + 5):match("^%x%x%x%x$") or "", 16)
                if not cp then
                    return nil, "bad \\u escape"
                end
                i = j + 6
                if cp >= 0xD800 and cp <= 0xDBFF then
                    local lo = tonumber(s:sub(i, i + 5):match("^\\u(%x%x%x%x)$") or "", 16)
                    if lo and lo >= 0xDC00 and lo <= 0xDFFF then
                        cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
                        i = i + 6
                    else
                        cp = 0xFFFD
                    end
                elseif cp >= 0xDC00 and cp <= 0xDFFF then
                    cp = 0xFFFD
                end
                table.insert(buf, utf8_encode(cp))
            elseif ESCAPES[e] then
                table.insert(buf, ESCAPES[e])
                i = j + 2
            else
                return nil, "bad escape"
            end
        end
    end
    local value
    local function nested(open, close)
        -- skips an object or array, strings included; returns its raw text
        local start, depth = i, 0
        while i <= n do
            local j = s:find('[%[%]{}"]', i)
            if not j then
                return nil, "unterminated " .. open
            end
            local c = s:sub(j, j)
            if c == '"' then
                i = j
                local _, err = str()
                if err then
                    return nil, err
                end
            else
                i = j + 1
                if c == "{" or c == "[" then
                    depth = depth + 1
                else
                    depth = depth - 1
                    if depth == 0 then
                        if c ~= close then
                            return nil, "mismatched brackets"
                        end
                        return s:sub(start, i - 1)
                    end
                end
            end
        end
        return nil, "unterminated " .. open
    end
    value = function()
        ws()
        local c = s:sub(i, i)
        if c == '"' then
            return str()
        elseif c == "{" then
            return nested("{", "}")
        elseif c == "[" then
            return nested("[", "]")
        end
        local tok = s:match("^[%w%.%+%-]+", i)
        if not tok then
            return nil, "unexpected character"
        end
        if not (tok == "true" or tok == "false" or tok == "null" or tok:match("^%-?%d+%.?%d*[eE]?[%+%-]?%d*$")) then
            return nil, "bad value " .. excerpt(tok, 16)
        end
        i = i + #tok
        return tok
    end

    ws()
    if s:sub(i, i) ~= "{" then
        return nil, "does not start with {"
    end
    i = i + 1
    local out = {}
    ws()
    if s:sub(i, i) == "}" then
        i = i + 1
    else
        while true do
            ws()
            if s:sub(i, i) ~= '"' then
                return nil, "expected a key"
            end
            local key, err = str()
            if not key then
                return nil, err
            end
            ws()
            if s:sub(i, i) ~= ":" then
                return nil, "expected :"
            end
            i = i + 1
            local v, verr = value()
            if v == nil then
                return nil, verr
            end
            out[key] = v
            ws()
            local c = s:sub(i, i)
            i = i + 1
            if c == "}" then
                break
            elseif c ~= "," then
                return nil, "expected , or }"
            end
        end
    end
    ws()
    if i <= n then
        return nil, "text after the object"
    end
    return out
end

---------------------------------------------------------------------------------------------------
-- Framing: finds the end of the PDU that starts at `offset`.
-- Returns pdu_length, body_length (without the terminator) when it is complete; nil when more
-- bytes are needed.

local function find_end(raw, offset, terminator)
    local j = raw:find(terminator, offset + 1, true)
    if not j then
        return nil
    end
    local body = j - 1 - offset
    return body + #terminator, body
end

---------------------------------------------------------------------------------------------------
-- One PDU's subtree, with its direction, the service and whether it came through TLS.

local function pdu(ctx, tree, range, title, to_server)
    local sub = tree:add(jaring, range, title)
    sub:add(F.direction, range, to_server and "to server" or "from server")
    sub:add(F.service, range, ctx.service):set_generated()
    if ctx.tls then
        sub:add(F.tls, range, true):set_generated()
    end
    return sub
end

-- A line's text without its line end, and whether that end was a bare LF.
local function line_text(tvb, offset, body_len)
    local raw = tvb:raw(offset, body_len)
    if body_len > 0 and raw:sub(-1) == "\r" then
        return raw:sub(1, -2), false
    end
    return raw, true
end

---------------------------------------------------------------------------------------------------
-- TIME

local function dissect_time(tvb, pinfo, tree, offset, pdu_len, body_len, to_server, ctx)
    local range = tvb(offset, pdu_len)
    local raw, bare_lf = line_text(tvb, offset, body_len)
    local text_range = tvb(offset, math.max(#raw, 0))
    if to_server then
        local sub = pdu(ctx, tree, range, "jaring TIME request", true)
        local item = sub:add(F.time_request, text_range, raw)
        local kind
        if not valid_utf8(raw) then
            kind = "unknown"
            item:add_proto_expert_info(E.not_utf8, "Request is not valid UTF-8: the server answers ERR")
        elseif raw:sub(1, 4) == "TIME" then
            kind = "TIME"
        elseif raw:match("^QUIT +$") or raw == "QUIT" then
            kind = "QUIT"
        elseif raw:match("^ *$") then
            kind = "blank"
        else
            kind = "unknown"
            item:add_proto_expert_info(E.unknown, "Unknown request: the server answers ERR (commands are TIME and QUIT, upper case)")
        end
        sub:add(F.time_kind, range, kind)
        if #raw > TIME_MAX_LINE then
            item:add_proto_expert_info(E.too_long, "Longer than 1024 bytes: the server answers ERR and closes")
        end
        if bare_lf then
            item:add_proto_expert_info(E.bare_lf)
        end
        sub:append_text(": " .. excerpt(raw))
        table.insert(ctx.info, kind == "unknown" and ("Request " .. excerpt(raw, 20)) or kind)
    else
        local sub = pdu(ctx, tree, range, "jaring TIME reply", false)
        local item = sub:add(F.time_reply, text_range, raw)
        local clock = raw:match("^JAM (%d%d:%d%d:%d%d)$")
        if clock then
            sub:add(F.time_clock, tvb(offset + 4, 8), clock)
            table.insert(ctx.info, raw)
        elseif raw:sub(1, 4) == "ERR " then
            sub:add(F.time_error, tvb(offset + 4, #raw - 4), raw:sub(5))
            item:add_proto_expert_info(E.server_error, "ERR: " .. excerpt(raw:sub(5), 80))
            table.insert(ctx.info, excerpt(raw, 30))
        else
            item:add_proto_expert_info(E.bad_reply, "Neither JAM hh:mm:ss nor ERR")
            table.insert(ctx.info, "Reply " .. excerpt(raw, 20))
        end
        if bare_lf then
            item:add_proto_expert_info(E.bad_reply, "A reply ends with CR LF")
        end
        sub:append_text(": " .. excerpt(raw))
    end
end

---------------------------------------------------------------------------------------------------
-- Chat

-- What each command's parameters are: "token", "user", "password", "target", "message" (the rest
-- of the line), "args" (every remaining word, each a jaring.chat.arg).
local CHAT_COMMANDS = {
    auth = { "user", "password" },
    send = { "token", "target", "message" },
    inbox = { "token", "args" },
    logout = { "token" },
    users = { "token", "args" },
    history = { "token", "target", "args" },
    group = { "token", "target", "args" },
    sendgroup = { "token", "target", "message" },
    inboxgroup = { "token", "target", "args" },
    groups = { "token", "args" },
    members = { "token", "target", "args" },
    leave = { "token", "target" },
    realms = { "token" },
    watch = { "token", "args" },
    ack = { "token", "args" },
    ping = { "token" },
}

local function dissect_chat_request(tvb, pinfo, tree, offset, pdu_len, body_len, ctx, st)
    local range = tvb(offset, pdu_len)
    local raw, bare_lf = line_text(tvb, offset, body_len)
    local text = trim_end(raw)
    local line_range = tvb(offset, #raw)

    -- In a live group session every line is a message to the group, not a command.
    local live = remember(pinfo, offset, ctx.tls, function()
        if st.live then
            if text:lower() == "exit" then
                st.live = nil
                return "exit"
            end
            return "live"
        end
        return "command"
    end)
    if live ~= "command" then
        local sub = pdu(ctx, tree, range, "jaring chat live session line", true)
        sub:add(F.chat_kind, range, "live")
        if live == "exit" then
            sub:add(F.chat_cmd, line_range, "exit")
            sub:append_text(": exit")
            table.insert(ctx.info, "exit (ends the live session)")
        elseif text ~= "" then
            sub:add(F.chat_message, line_range, text)
            sub:append_text(": " .. excerpt(text))
            table.insert(ctx.info, "Live: " .. excerpt(text, 30))
        else
            sub:append_text(": (empty line, sends nothing)")
            table.insert(ctx.info, "Live: (empty)")
        end
        return
    end

    local sub = pdu(ctx, tree, range, "jaring chat request", true)
    sub:add(F.chat_kind, range, "request")
    if bare_lf then
        sub:add_proto_expert_info(E.bare_lf)
    end
    if #raw > CHAT_MAX_LINE then
        sub:add_proto_expert_info(E.too_long, "Longer than 65,536 bytes: the server answers ERROR and closes")
    end
    if not valid_utf8(raw) then
        sub:add_proto_expert_info(E.not_utf8, "Request is not valid UTF-8: the server answers ERROR")
        table.insert(ctx.info, "Request (not UTF-8)")
        return
    end
    if raw:find("\0", 1, true) then
        sub:add_proto_expert_info(E.unknown, "Request holds a NUL byte: the server answers ERROR")
    end
    local word, params = next_param(text)
    if not word then
        sub:add_proto_expert_info(E.unknown, "Empty request: the server answers ERROR")
        sub:append_text(": (empty)")
        table.insert(ctx.info, "(empty request)")
        return
    end
    local cmd = word:lower()
    local layout = CHAT_COMMANDS[cmd]
    -- Where each parameter lies in the line, so selecting a field highlights its bytes.
    local pos = text:find(word, 1, true) - 1
    local function param_range(value, from)
        local at = text:find(value, from + 1, true)
        if not at then
            return line_range, from
        end
        return tvb(offset + at - 1, #value), at - 1 + #value
    end
    local cursor = pos + #word
    sub:add(F.chat_cmd, tvb(offset + pos, #word), cmd)
    local shown = { cmd }
    if not layout then
        sub:add_proto_expert_info(E.unknown, "Unknown command \"" .. excerpt(word, 32) .. "\": the server answers ERROR")
        table.insert(ctx.info, "Request " .. excerpt(word, 20) .. " (unknown)")
        sub:append_text(": " .. excerpt(word))
        return
    end
    local missing = false
    local greedy = false
    local rest = params
    for _, kind in ipairs(layout) do
        greedy = kind == "message" or kind == "args"
        if kind == "message" then
            -- The rest of the line after the previous parameter and the one space after it.
            if rest:gsub(" ", "") == "" then
                missing = true
                break
            end
            local r
            r, cursor = param_range(rest, cursor)
            sub:add(F.chat_message, r, rest)
            table.insert(shown, excerpt(rest, 30))
            break
        elseif kind == "args" then
            while true do
                local value
                value, rest = next_param(rest)
                if not value then
                    break
                end
                local r
                r, cursor = param_range(value, cursor)
                sub:add(F.chat_arg, r, value)
                table.insert(shown, excerpt(value, 20))
            end
            break
        else
            local value
            value, rest = next_param(rest)
            if not value then
                if not (cmd == "ping" and kind == "token") then
                    missing = true
                end
                break
            end
            local r
            r, cursor = param_range(value, cursor)
            if kind == "token" then
                sub:add(F.chat_token, r, mask(value))
                table.insert(shown, jaring.prefs.reveal_secrets and value or "T")
            elseif kind == "password" then
                sub:add(F.chat_password, r, mask(value))
                table.insert(shown, jaring.prefs.reveal_secrets and value or "***")
            elseif kind == "user" then
                sub:add(F.chat_user, r, value)
                table.insert(shown, value)
            else
                sub:add(F.chat_target, r, value)
                table.insert(shown, value)
            end
        end
    end
    if missing then
        sub:add_proto_expert_info(E.unknown, "Missing parameters: the server answers ERROR")
    elseif not greedy and next_param(rest) then
        sub:add_proto_expert_info(E.unknown, "Too many parameters: the server answers ERROR")
    end
    local summary = table.concat(shown, " ")
    sub:append_text(": " .. excerpt(summary, 60))
    table.insert(ctx.info, excerpt(summary, 40))

    -- A live group session starts with `group TOKEN NAME` (JSON) or `group TOKEN NAME ORIGIN`
    -- (classic raw text); the reply says whether it did.
    if cmd == "group" and not missing then
        remember(pinfo, offset .. "g", ctx.tls, function()
            local words = 0
            for _ in params:gmatch("[^ ]+") do
                words = words + 1
            end
            if words >= 3 then
                -- Classic mode: from now on the client sends raw posts without line ends.
                st.joining = "classic"
                st.classic = true
            else
                st.joining = "live"
            end
            return true
        end)
    end
end

-- Gives `body` to the JSON dissector, with tokens masked unless the preference reveals them.
local function call_json(tvb, pinfo, sub, offset, body, body_len)
    local json_tvb = tvb(offset, body_len):tvb()
    if not jaring.prefs.reveal_secrets and body:find('"tokenid"%s*:%s*"') then
        local masked = body:gsub('("tokenid"%s*:%s*")(%x%x%x%x)(%x+)(")', function(a, head, tail, z)
            return a .. head .. string.rep("*", #tail) .. z
        end)
        json_tvb = ByteArray.new(masked, true):tvb("JSON (token masked)")
    end
    if json_dissector then
        local ok = pcall(function()
            json_dissector:call(json_tvb, pinfo, sub)
        end)
        if not ok then
            sub:add_proto_expert_info(E.bad_json, "The JSON dissector could not read this")
        end
    end
end

local EVENT_FIELDS = {
    { "group", F.chat_group }, { "from", F.chat_from }, { "msg", F.chat_msg }, { "id", F.chat_id },
    { "reason", F.chat_reason },
}

local function dissect_chat_json(tvb, pinfo, tree, offset, pdu_len, body_len, ctx, st)
    local range = tvb(offset, pdu_len)
    local body = tvb:raw(offset, body_len)
    local sub = pdu(ctx, tree, range, "jaring chat", false)
    local obj, err = json_object(body)
    if not obj then
        sub:add(F.chat_kind, range, "reply")
        sub:add_proto_expert_info(E.bad_json, "Not a JSON object: " .. err)
        sub:append_text(" reply (not JSON)")
        table.insert(ctx.info, "Reply (not JSON)")
        return
    end
    sub:add(F.chat_json_len, range, body_len)
    local summary
    if obj.event ~= nil then
        sub:set_text("jaring chat event")
        sub:add(F.chat_kind, range, "event")
        sub:add(F.chat_event, range, tostring(obj.event))
        for _, kv in ipairs(EVENT_FIELDS) do
            local v = obj[kv[1]]
            if type(v) == "string" then
                sub:add(kv[2], range, v)
            end
        end
        local seq = tonumber(obj.seq)
        if seq and seq >= 0 and seq == math.floor(seq) then
            sub:add(F.chat_seq, range, UInt64.new(seq))
        end
        summary = "Event " .. tostring(obj.event)
        if type(obj.msg) == "string" then
            summary = summary .. ": " .. excerpt(obj.msg, 30)
        end
        if obj.event == "end" then
            remember(pinfo, offset .. "e", ctx.tls, function()
                st.live = nil
                return true
            end)
        end
    else
        sub:set_text("jaring chat reply")
        sub:add(F.chat_kind, range, "reply")
        local status = obj.status
        if type(status) ~= "string" then
            sub:add_proto_expert_info(E.bad_reply, "Neither a \"status\" nor an \"event\" key")
            status = "?"
        end
        sub:add(F.chat_status, range, status)
        if type(obj.message) == "string" then
            sub:add(F.chat_text, range, obj.message)
        end
        if type(obj.group) == "string" then
            sub:add(F.chat_group, range, obj.group)
        end
        if type(obj.id) == "string" then
            sub:add(F.chat_id, range, obj.id)
        end
        if status == "ERROR" then
            sub:add_proto_expert_info(E.server_error, "ERROR: " .. excerpt(tostring(obj.message), 80))
        end
        summary = status
        if type(obj.message) == "string" then
            summary = summary .. " " .. excerpt(obj.message, 30)
        elseif obj.tokenid ~= nil then
            summary = summary .. " (token)"
        end
        remember(pinfo, offset .. "r", ctx.tls, function()
            if st.joining then
                if status == "OK" and st.joining == "live" then
                    st.live = true
                end
                st.joining = nil
            end
            if st.classic then
                -- The classic mode's last word is a framed reply.
                st.classic = nil
            end
            return true
        end)
    end
    sub:append_text(": " .. excerpt(summary, 60))
    table.insert(ctx.info, summary)
    call_json(tvb, pinfo, sub, offset, body, body_len)
end

-- Classic group mode text from the server: unframed, so one PDU is whatever arrived up to the
-- next JSON reply.
local function dissect_chat_raw(tvb, pinfo, tree, offset, len, ctx, st)
    local range = tvb(offset, len)
    local raw = tvb:raw(offset, len)
    local sub = pdu(ctx, tree, range, "jaring chat classic group text", false)
    sub:add(F.chat_kind, range, "raw")
    local item = sub:add(F.chat_raw, range, raw)
    local classic = remember(pinfo, offset .. "k", ctx.tls, function()
        return st.classic or false
    end)
    if not classic then
        item:add_proto_expert_info(E.bad_reply, "Text that is not JSON, and no classic group mode was seen on this connection")
    end
    sub:append_text(": " .. excerpt(raw))
    table.insert(ctx.info, "Text: " .. excerpt(raw, 30))
end

-- A classic group mode post from the client: raw text, no line end.
local function dissect_chat_post(tvb, pinfo, tree, offset, len, ctx)
    local range = tvb(offset, len)
    local raw = tvb:raw(offset, len)
    local sub = pdu(ctx, tree, range, "jaring chat classic group post", true)
    sub:add(F.chat_kind, range, "raw")
    local text = raw:gsub("^%s+", ""):gsub("%s+$", "")
    if text:lower() == "exit" then
        -- The mode ends with the server's JSON reply after its own raw `exit`.
        sub:add(F.chat_cmd, range, "exit")
        table.insert(ctx.info, "exit (ends classic group mode)")
    else
        sub:add(F.chat_message, range, raw)
        table.insert(ctx.info, "Post: " .. excerpt(raw, 30))
    end
    sub:append_text(": " .. excerpt(raw))
end

---------------------------------------------------------------------------------------------------
-- Federation

local FED_STRINGS = {
    { "realm", F.fed_realm }, { "to", F.fed_to }, { "from", F.fed_from }, { "user", F.fed_user },
    { "group", F.fed_group }, { "id", F.fed_id }, { "body", F.fed_body }, { "reason", F.fed_reason },
    { "error", F.fed_error },
}

local FED_KINDS = {
    hello = true, challenge = true, auth = true, ready = true, refused = true, msg = true, ack = true,
    bounce = true, lookup = true, found = true, ping = true, pong = true, glookup = true,
    gfound = true, gmembers = true, gmemberlist = true, gjoin = true, gleave = true, greply = true,
    gpost = true, gmsg = true, gpresence = true, gack = true,
}

local function dissect_fed(tvb, pinfo, tree, offset, pdu_len, body_len, to_server, ctx)
    local range = tvb(offset, pdu_len)
    local body = tvb:raw(offset, body_len)
    local sub = pdu(ctx, tree, range, "jaring federation frame", to_server)
    sub:add(F.fed_len, range, body_len)
    local obj, err = json_object(body)
    if not obj then
        sub:add_proto_expert_info(E.bad_json, "Not a JSON object: " .. err .. " (the link ends)")
        table.insert(ctx.info, "Frame (not JSON)")
        return
    end
    local kind = obj.t
    if type(kind) ~= "string" then
        sub:add_proto_expert_info(E.bad_reply, "No \"t\" key: the peer ends the link")
        kind = "?"
    elseif not FED_KINDS[kind] then
        sub:add_proto_expert_info(E.unknown, "Unknown frame kind: the peer ends the link")
    end
    sub:add(F.fed_kind, range, kind)
    if body_len > FED_MAX_FRAME then
        sub:add_proto_expert_info(E.too_long, "Longer than 512 KiB: the peer ends the link")
    end
    for _, kv in ipairs(FED_STRINGS) do
        local v = obj[kv[1]]
        if type(v) == "string" then
            sub:add(kv[2], range, v)
        end
    end
    for _, kv in ipairs({ { "q", F.fed_q }, { "seq", F.fed_seq } }) do
        local v = tonumber(obj[kv[1]])
        if v and v >= 0 and v == math.floor(v) then
            sub:add(kv[2], range, UInt64.new(v))
        end
    end
    if kind == "refused" then
        sub:add_proto_expert_info(E.server_error, "Refused: " .. excerpt(tostring(obj.reason), 80))
    end
    sub:append_text(": " .. kind)
    local summary = kind
    if kind == "hello" then
        summary = "hello " .. tostring(obj.realm) .. " -> " .. tostring(obj.to)
    elseif type(obj.body) == "string" then
        summary = kind .. ": " .. excerpt(obj.body, 30)
    elseif type(obj.group) == "string" then
        summary = kind .. " " .. obj.group
    end
    table.insert(ctx.info, summary)
    call_json(tvb, pinfo, sub, offset, body, body_len)
end

---------------------------------------------------------------------------------------------------
-- Echo

local function dissect_echo(tvb, pinfo, tree, to_server, ctx, st)
    local len = tvb:len()
    if len == 0 then
        return
    end
    local range = tvb()
    local total = remember(pinfo, 0, ctx.tls, function()
        local key = to_server and "sent" or "echoed"
        st[key] = (st[key] or 0) + len
        return st[key]
    end)
    local sub = pdu(ctx, tree, range, "jaring echo data", to_server)
    sub:add(F.echo_bytes, range, len)
    sub:add(F.echo_total, range, UInt64.new(total))
    sub:add(F.echo_data, range)
    sub:append_text(": " .. len .. " bytes " .. (to_server and "to server" or "from server"))
    table.insert(ctx.info, (to_server and "Sent " or "Echoed ") .. len .. " bytes (" .. total .. " so far)")
end

---------------------------------------------------------------------------------------------------
-- The dissector

local SERVICE_LABEL = { time = "TIME", echo = "ECHO", echo_tls = "ECHO", chat = "CHAT", fed = "FED-LINK" }

-- Whether this tvb (at the start of a TCP payload) is a TLS record: content type 20-23, then
-- version 3.x.
local function looks_like_tls(tvb)
    if tvb:len() < 3 then
        return tvb:len() >= 1 and tvb(0, 1):uint() == 0x16
    end
    local t = tvb(0, 1):uint()
    return t >= 0x14 and t <= 0x17 and tvb(1, 1):uint() == 3 and tvb(2, 1):uint() <= 4
end

-- Set while the TLS dissector runs on our behalf: whatever it hands back is decrypted data.
local inside_tls = false

local function dissect(tvb, pinfo, tree)
    local service, to_server = classify(pinfo)
    if not service then
        return 0
    end
    local st = stream_state(pinfo)
    current_len = tvb:len()

    if not inside_tls then
        -- TLS on this connection? Decided by its first bytes (0x16: a handshake record), as the
        -- servers do, and remembered for the rest of the connection. Plaintext echo is never
        -- TLS (it is binary-safe: any byte may come first), the echo TLS port always.
        local is_tls = remember(pinfo, "tls", false, function()
            if st.tls == nil and tvb:len() > 0 then
                st.tls = service == "echo_tls" or (service ~= "echo" and looks_like_tls(tvb))
            end
            return st.tls or false
        end)
        if is_tls then
            if not tls_dissector then
                return 0
            end
            inside_tls = true
            local ok, consumed = pcall(function()
                return tls_dissector:call(tvb, pinfo, tree)
            end)
            inside_tls = false
            if not ok then
                tree:add_proto_expert_info(E.internal, "The TLS dissector failed: " .. tostring(consumed))
            end
            return tvb:len()
        end
    end

    current_len = tvb:len()
    local ctx = { info = {}, tls = inside_tls, service = (service == "echo_tls") and "echo" or service }
    local label = SERVICE_LABEL[service]
    pinfo.cols.protocol = label

    if service == "echo" or service == "echo_tls" then
        dissect_echo(tvb, pinfo, tree, to_server, ctx, st)
    else
        local raw = tvb:raw()
        local len = #raw
        local max_pdu = jaring.prefs.max_pdu
        local offset = 0
        local count = 0
        while offset < len do
            local pdu_len, body_len
            local kind
            local classic = service == "chat" and to_server and remember(pinfo, offset .. "c", inside_tls, function()
                return st.classic or false
            end)
            if classic then
                -- Classic group mode posts have no line end: a post is what arrived.
                pdu_len = len - offset
                kind = "post"
            elseif service == "chat" and not to_server then
                if raw:byte(offset + 1) ~= 123 then -- '{': anything else is classic raw text
                    local j = raw:find("{\"status\"", offset + 1, true)
                    pdu_len = (j and j - 1 or len) - offset
                    kind = "raw"
                else
                    pdu_len, body_len = find_end(raw, offset, "\r\n\r\n")
                    kind = "json"
                end
            else
                pdu_len, body_len = find_end(raw, offset, "\n")
                kind = "line"
            end
            if not pdu_len then
                local pending = len - offset
                if pending <= max_pdu and pinfo.can_desegment > 0 and tvb:reported_len() == tvb:len() then
                    -- Ask TCP (or TLS) for more: the PDU starts at offset and goes on in the next
                    -- segment.
                    pinfo.desegment_offset = offset
                    pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
                    break
                end
                local range = tvb(offset, pending)
                local sub = pdu(ctx, tree, range, "jaring " .. label .. " (unterminated)", to_server)
                if pending > max_pdu then
                    sub:add_proto_expert_info(E.unterminated, "No end within " .. max_pdu .. " bytes (preference max_pdu)")
                else
                    sub:add_proto_expert_info(E.incomplete)
                end
                table.insert(ctx.info, "(unterminated)")
                offset = len
                break
            end
            count = count + 1
            if service == "time" then
                dissect_time(tvb, pinfo, tree, offset, pdu_len, body_len, to_server, ctx)
            elseif service == "chat" then
                if kind == "post" then
                    dissect_chat_post(tvb, pinfo, tree, offset, pdu_len, ctx)
                elseif to_server then
                    dissect_chat_request(tvb, pinfo, tree, offset, pdu_len, body_len, ctx, st)
                elseif kind == "raw" then
                    dissect_chat_raw(tvb, pinfo, tree, offset, pdu_len, ctx, st)
                else
                    if body_len > CHAT_MAX_REPLY then
                        tree:add_proto_expert_info(E.too_long, "Reply longer than 1 MiB")
                    end
                    dissect_chat_json(tvb, pinfo, tree, offset, pdu_len, body_len, ctx, st)
                end
            else
                dissect_fed(tvb, pinfo, tree, offset, pdu_len, body_len, to_server, ctx)
            end
            offset = offset + pdu_len
        end
    end

    -- The Info column: each PDU named, or counted when there are many.
    local info = ctx.info
    if #info > 0 then
        local text
        if #info <= INFO_MAX_ITEMS then
            text = table.concat(info, ", ")
        else
            local counts, order = {}, {}
            for _, s in ipairs(info) do
                if not counts[s] then
                    counts[s] = 0
                    table.insert(order, s)
                end
                counts[s] = counts[s] + 1
            end
            local parts = {}
            for _, s in ipairs(order) do
                table.insert(parts, counts[s] > 1 and (s .. " x" .. counts[s]) or s)
            end
            text = #info .. " PDUs: " .. table.concat(parts, ", ")
        end
        pinfo.cols.protocol = label
        pinfo.cols.info = text
    end
    return tvb:len()
end

function jaring.dissector(tvb, pinfo, tree)
    local ok, result = pcall(dissect, tvb, pinfo, tree)
    if not ok then
        inside_tls = false
        tree:add_proto_expert_info(E.internal, "jaring.lua: " .. tostring(result))
        return tvb:len()
    end
    return result
end

function jaring.prefs_changed()
    register_ports()
end

register_ports()
