// Lossless DCT-domain JPEG crop (see jpegcrop.hpp). One pass of table-driven Huffman decoding
// keeps the coefficients of the MCUs inside any rect; each rect is then re-encoded with the
// input's own tables. Every read is bounds-checked: malformed input returns false.
#include "jpegcrop.hpp"

#include <array>
#include <cstring>

namespace pf {
namespace {

constexpr int kLookBits = 9;

struct Huff {
    bool defined = false;
    std::array<uint8_t, 17> bits{};  // bits[l]: codes of length l (1..16)
    std::vector<uint8_t> vals;
    // decoding
    std::array<uint16_t, 1 << kLookBits> look{};  // (length << 8) | symbol; 0: longer code
    std::array<int32_t, 18> maxcode{};
    std::array<int32_t, 17> valptr{}, mincode{};
    // AC fast path: a code and its extra bits within kLookBits bits, as
    // (value << 16) | (run << 8) | total length; 0: take the general path
    std::array<int32_t, 1 << kLookBits> fast{};
    // encoding
    std::array<uint16_t, 256> code{};
    std::array<uint8_t, 256> size{};  // 0: the symbol has no code

    bool build() {
        int n = 0;
        for (int l = 1; l <= 16; ++l) n += bits[l];
        if (n > 256 || static_cast<int>(vals.size()) != n) return false;
        look.fill(0);
        size.fill(0);
        int32_t c = 0;
        int k = 0;
        for (int l = 1; l <= 16; ++l) {
            valptr[l] = k;
            mincode[l] = c;
            for (int i = 0; i < bits[l]; ++i, ++k, ++c) {
                if (c >= (1 << l)) return false;  // over-subscribed table
                const uint8_t sym = vals[k];
                if (size[sym] == 0) {
                    code[sym] = static_cast<uint16_t>(c);
                    size[sym] = static_cast<uint8_t>(l);
                }
                if (l <= kLookBits) {
                    const int shift = kLookBits - l;
                    for (int j = 0; j < (1 << shift); ++j)
                        look[(c << shift) | j] = static_cast<uint16_t>((l << 8) | sym);
                }
            }
            maxcode[l] = bits[l] ? c - 1 : -1;
            c <<= 1;
        }
        maxcode[17] = 0x7fffffff;
        for (int i = 0; i < (1 << kLookBits); ++i) {
            const int e = look[i], l = e >> 8, r = (e >> 4) & 15, sz = e & 15;
            fast[i] = 0;
            if (e == 0 || sz == 0 || l + sz > kLookBits) continue;
            int v = (i >> (kLookBits - l - sz)) & ((1 << sz) - 1);
            if (v < (1 << (sz - 1))) v += 1 - (1 << sz);
            fast[i] = static_cast<int32_t>(static_cast<uint32_t>(v) << 16) | (r << 8) | (l + sz);
        }
        defined = true;
        return true;
    }
};

struct Component {
    int id = 0, h = 1, v = 1, tq = 0, td = 0, ta = 0;
};

struct Stream {
    std::array<std::vector<uint8_t>, 4> dqt;  // Pq byte + 64 (or 128) bytes, zigzag order
    std::array<Huff, 4> dc, ac;
    std::vector<std::string> app;  // APP0 / APP14 segments, marker included
    int sof = 0, width = 0, height = 0, restart = 0;
    std::vector<Component> comps;  // in scan order
    const uint8_t* scan = nullptr;
    const uint8_t* end = nullptr;
};

inline int be16(const uint8_t* p) { return (p[0] << 8) | p[1]; }

bool read_dqt(const uint8_t* p, int len, Stream& s) {
    while (len > 0) {
        const int pq = p[0] >> 4, tq = p[0] & 15, n = 1 + 64 * (pq + 1);
        if (pq > 1 || tq > 3 || len < n) return false;
        s.dqt[tq].assign(p, p + n);
        p += n;
        len -= n;
    }
    return true;
}

bool read_dht(const uint8_t* p, int len, Stream& s) {
    while (len > 0) {
        if (len < 17) return false;
        const int tc = p[0] >> 4, th = p[0] & 15;
        if (tc > 1 || th > 3) return false;
        Huff& t = tc ? s.ac[th] : s.dc[th];
        int n = 0;
        for (int l = 1; l <= 16; ++l) n += (t.bits[l] = p[l]);
        if (len < 17 + n) return false;
        t.vals.assign(p + 17, p + 17 + n);
        if (!t.build()) return false;
        p += 17 + n;
        len -= 17 + n;
    }
    return true;
}

bool read_sof(const uint8_t* p, int len, Stream& s, std::vector<Component>& frame) {
    if (len < 6 || p[0] != 8) return false;
    s.height = be16(p + 1);
    s.width = be16(p + 3);
    const int nf = p[5];
    if (s.width <= 0 || s.height <= 0 || nf < 1 || nf > 4 || len < 6 + 3 * nf) return false;
    frame.resize(nf);
    for (int i = 0; i < nf; ++i) {
        const uint8_t* c = p + 6 + 3 * i;
        frame[i].id = c[0];
        frame[i].h = c[1] >> 4;
        frame[i].v = c[1] & 15;
        frame[i].tq = c[2];
        if (frame[i].h < 1 || frame[i].h > 4 || frame[i].v < 1 || frame[i].v > 4 || c[2] > 3)
            return false;
    }
    return true;
}

bool read_sos(const uint8_t* p, int len, Stream& s, const std::vector<Component>& frame) {
    if (len < 1 || frame.empty()) return false;
    const int ns = p[0];
    if (ns != static_cast<int>(frame.size()) || len != 4 + 2 * ns) return false;
    s.comps.clear();
    for (int i = 0; i < ns; ++i) {
        const uint8_t* c = p + 1 + 2 * i;
        const Component* f = nullptr;
        for (const Component& fc : frame)
            if (fc.id == c[0]) f = &fc;
        if (f == nullptr) return false;
        for (const Component& done : s.comps)
            if (done.id == c[0]) return false;
        Component comp = *f;
        comp.td = c[1] >> 4;
        comp.ta = c[1] & 15;
        if (comp.td > 3 || comp.ta > 3) return false;
        s.comps.push_back(comp);
    }
    const uint8_t* q = p + 1 + 2 * ns;
    return q[0] == 0 && q[1] == 63 && q[2] == 0;  // sequential: Ss 0, Se 63, Ah Al 0
}

// Walk the markers of ``p[0:n]``; stop at SOS (``s.scan`` set) or EOI. ``frame`` collects SOF.
bool parse(const uint8_t* p, std::size_t n, Stream& s, std::vector<Component>& frame,
           bool tables_only) {
    const uint8_t* end = p + n;
    if (n < 4 || p[0] != 0xFF || p[1] != 0xD8) return false;
    p += 2;
    while (true) {
        if (end - p < 2 || p[0] != 0xFF) return false;
        while (end - p >= 2 && p[1] == 0xFF) ++p;  // fill bytes
        if (end - p < 2) return false;
        const int m = p[1];
        p += 2;
        if (m == 0xD9) return tables_only;  // EOI
        if (end - p < 2) return false;
        const int len = be16(p);
        if (len < 2 || end - p < len) return false;
        const uint8_t* body = p + 2;
        const int blen = len - 2;
        bool ok = true;
        if (m == 0xDB) {
            ok = read_dqt(body, blen, s);
        } else if (m == 0xC4) {
            ok = read_dht(body, blen, s);
        } else if (m == 0xDD) {
            ok = blen == 2;
            if (ok) s.restart = be16(body);
        } else if (m == 0xC0 || m == 0xC1) {
            ok = !tables_only && frame.empty() && read_sof(body, blen, s, frame);
            s.sof = m;
        } else if (m == 0xDA) {
            if (tables_only || !read_sos(body, blen, s, frame)) return false;
            s.scan = p + len;
            s.end = end;
            return true;
        } else if (m == 0xE0 || m == 0xEE) {
            s.app.emplace_back(reinterpret_cast<const char*>(p - 2), len + 2);
        } else if (!((m >= 0xE1 && m <= 0xEF) || m == 0xFE)) {
            return false;  // SOFn other than 0/1, DAC, DNL, stray RSTn, ...: not handled
        }
        if (!ok) return false;
        p += len;
    }
}

struct BitReader {
    const uint8_t* p;
    const uint8_t* end;
    uint64_t buf = 0;
    int bits = 0;
    int fake = 0;  // zero bytes fed past a marker or the end
    bool marker = false;

    void fill() {
        // Fast path: eight bytes without 0xFF (no stuffing, no marker) go in at once.
        if (!marker && bits <= 56 && end - p >= 8) {
            uint64_t w;
            std::memcpy(&w, p, 8);
            w = __builtin_bswap64(w);
            const uint64_t x = ~w;
            if (((x - 0x0101010101010101ull) & w & 0x8080808080808080ull) == 0) {
                const int nb = (64 - bits) >> 3;
                const uint64_t take = nb == 8 ? w : w & (~uint64_t{0} << (64 - 8 * nb));
                buf |= take >> bits;
                bits += 8 * nb;
                p += nb;
                return;
            }
        }
        while (bits <= 56) {
            uint32_t b = 0;
            if (!marker && p < end) {
                b = *p;
                if (b == 0xFF) {
                    if (end - p >= 2 && p[1] == 0x00) {
                        p += 2;
                    } else {
                        marker = true;
                        b = 0;
                        ++fake;
                    }
                } else {
                    ++p;
                }
            } else {
                ++fake;
            }
            buf |= static_cast<uint64_t>(b) << (56 - bits);
            bits += 8;
        }
    }
    // Whether bits past the real data were consumed (a truncated or corrupt scan).
    bool overrun() const { return fake * 8 > bits; }
    uint32_t peek(int n) const { return static_cast<uint32_t>(buf >> (64 - n)); }
    void skip(int n) {
        buf <<= n;
        bits -= n;
    }
    // The next RSTn (n = index & 7): skip the padding, read the marker, restart the reader.
    bool restart(int index) {
        if (overrun()) return false;
        while (p < end && !(p[0] == 0xFF && end - p >= 2 && p[1] != 0x00 && p[1] != 0xFF)) ++p;
        if (end - p < 2 || p[1] != 0xD0 + (index & 7)) return false;
        p += 2;
        buf = 0;
        bits = fake = 0;
        marker = false;
        return true;
    }
};

// A Huffman symbol; the caller made sure of 32 bits in the reader (a code and its extra bits).
inline bool decode_symbol(BitReader& br, const Huff& t, int& sym) {
    const uint16_t e = t.look[br.peek(kLookBits)];
    if (e) {
        br.skip(e >> 8);
        sym = e & 0xFF;
        return true;
    }
    for (int l = kLookBits + 1; l <= 16; ++l) {
        const int32_t c = static_cast<int32_t>(br.peek(l));
        if (c <= t.maxcode[l]) {
            const int i = t.valptr[l] + c - t.mincode[l];
            if (i < 0 || i >= static_cast<int>(t.vals.size())) return false;
            br.skip(l);
            sym = t.vals[i];
            return true;
        }
    }
    return false;
}

inline int receive_extend(BitReader& br, int s) {
    if (s == 0) return 0;
    const int v = static_cast<int>(br.peek(s));
    br.skip(s);
    return v < (1 << (s - 1)) ? v - (1 << s) + 1 : v;
}

// One block's coefficients (zigzag order) into ``blk``; ``pred`` is the component's DC; ``nz``
// gets bit k set for each non-zero AC coefficient k (the encoder walks these bits only).
bool decode_block(BitReader& reader, const Huff& dc, const Huff& ac, int& pred_io,
                  int16_t* blk, uint64_t& nz_out) {
    BitReader br = reader;  // local copies: no aliasing with the coefficient stores
    int s, pred = pred_io;
    uint64_t nz = 0;
    if (br.bits < 32) br.fill();
    if (!decode_symbol(br, dc, s) || s > 11) return false;
    pred += receive_extend(br, s);
    if (pred < -32768 || pred > 32767) return false;
    std::memset(blk, 0, 64 * sizeof(int16_t));
    blk[0] = static_cast<int16_t>(pred);
    for (int k = 1; k < 64; ++k) {
        if (br.bits < 32) br.fill();
        const int32_t f = ac.fast[br.peek(kLookBits)];
        if (f) {  // a short code with a small value: one look-up
            br.skip(f & 0xFF);
            k += (f >> 8) & 15;
            if (k > 63) return false;
            blk[k] = static_cast<int16_t>(f >> 16);
            nz |= uint64_t{1} << k;
            continue;
        }
        if (!decode_symbol(br, ac, s)) return false;
        const int r = s >> 4, size = s & 15;
        if (size == 0) {
            if (r != 15) break;  // EOB
            k += 15;             // ZRL
            continue;
        }
        k += r;
        if (k > 63) return false;
        blk[k] = static_cast<int16_t>(receive_extend(br, size));
        nz |= uint64_t{1} << k;
    }
    reader = br;
    pred_io = pred;
    nz_out = nz;
    return true;
}

// Four bytes of entropy data, a 0x00 stuffed after each 0xFF (the rare case of BitWriter::put).
__attribute__((noinline)) void put_stuffed(std::string* out, uint32_t w) {
    for (int shift = 24; shift >= 0; shift -= 8) {
        const char b = static_cast<char>(w >> shift);
        out->push_back(b);
        if (b == '\xFF') out->push_back('\0');
    }
}

struct BitWriter {
    std::string* out;
    uint64_t buf = 0;
    int bits = 0;  // pending bits, the low ``bits`` of ``buf``; always < 32 between calls

    void put(uint32_t v, int n) {  // n <= 27 (a Huffman code and its extra bits)
        buf = (buf << n) | v;
        bits += n;
        if (bits < 32) return;
        bits -= 32;
        const uint32_t w = static_cast<uint32_t>(buf >> bits);
        if (((~w - 0x01010101u) & w & 0x80808080u) == 0) {  // no 0xFF byte: no stuffing
            const char b[4] = {static_cast<char>(w >> 24), static_cast<char>(w >> 16),
                               static_cast<char>(w >> 8), static_cast<char>(w)};
            out->append(b, 4);
        } else {
            put_stuffed(out, w);
        }
    }
    void flush() {
        const int pad = (8 - bits % 8) % 8;
        if (pad) put((1u << pad) - 1, pad);  // pad the last byte with one bits
        for (; bits > 0; bits -= 8) {
            const char b = static_cast<char>(buf >> (bits - 8));
            out->push_back(b);
            if (b == '\xFF') out->push_back('\0');
        }
    }
};

inline int category(int v) {
    const unsigned a = static_cast<unsigned>(v < 0 ? -v : v);
    return a ? 32 - __builtin_clz(a) : 0;
}

// The code of ``sym`` followed by ``n`` extra bits of ``v``; false when ``sym`` has no code.
inline bool emit(BitWriter& bw, const Huff& t, int sym, int v = 0, int n = 0) {
    const int size = t.size[sym];
    if (size == 0) return false;
    const uint32_t extra = static_cast<uint32_t>(v < 0 ? v - 1 : v) & ((1u << n) - 1);
    bw.put((static_cast<uint32_t>(t.code[sym]) << n) | extra, size + n);
    return true;
}

bool encode_block(BitWriter& writer, const Huff& dc, const Huff& ac, int& pred,
                  const int16_t* blk, uint64_t nz) {
    BitWriter bw = writer;  // a local copy the compiler keeps in registers
    const int diff = blk[0] - pred;
    pred = blk[0];
    const int n = category(diff);
    if (n > 11 || !emit(bw, dc, n, diff, n)) return false;
    int last = 0;
    for (; nz; nz &= nz - 1) {  // the non-zero AC coefficients, in zigzag order
        const int k = __builtin_ctzll(nz);
        int run = k - last - 1;
        last = k;
        for (; run > 15; run -= 16)
            if (!emit(bw, ac, 0xF0)) return false;
        const int c = blk[k], m = category(c);
        if (m > 10 || !emit(bw, ac, (run << 4) | m, c, m)) return false;
    }
    if (last != 63 && !emit(bw, ac, 0x00)) return false;
    writer = bw;
    return true;
}

void put_marker(std::string& o, int m, int len) {
    const char b[4] = {'\xFF', static_cast<char>(m), static_cast<char>(len >> 8),
                       static_cast<char>(len & 0xFF)};
    o.append(b, 4);
}

void write_header(std::string& o, const Stream& s, int w, int h) {
    o.append("\xFF\xD8", 2);
    for (const std::string& a : s.app) o += a;
    bool q_done[4] = {}, d_done[4] = {}, a_done[4] = {};
    for (const Component& c : s.comps) {
        if (q_done[c.tq]) continue;
        q_done[c.tq] = true;
        const std::vector<uint8_t>& q = s.dqt[c.tq];
        put_marker(o, 0xDB, 2 + static_cast<int>(q.size()));
        o.append(reinterpret_cast<const char*>(q.data()), q.size());
    }
    const int nf = static_cast<int>(s.comps.size());
    put_marker(o, s.sof, 8 + 3 * nf);
    const char f[6] = {8, static_cast<char>(h >> 8), static_cast<char>(h & 0xFF),
                       static_cast<char>(w >> 8), static_cast<char>(w & 0xFF),
                       static_cast<char>(nf)};
    o.append(f, 6);
    for (const Component& c : s.comps) {
        const char e[3] = {static_cast<char>(c.id), static_cast<char>((c.h << 4) | c.v),
                           static_cast<char>(c.tq)};
        o.append(e, 3);
    }
    for (const Component& c : s.comps) {
        for (int tc = 0; tc < 2; ++tc) {
            const int th = tc ? c.ta : c.td;
            bool* done = tc ? a_done : d_done;
            if (done[th]) continue;
            done[th] = true;
            const Huff& t = tc ? s.ac[th] : s.dc[th];
            put_marker(o, 0xC4, 2 + 17 + static_cast<int>(t.vals.size()));
            o.push_back(static_cast<char>((tc << 4) | th));
            o.append(reinterpret_cast<const char*>(t.bits.data() + 1), 16);
            o.append(reinterpret_cast<const char*>(t.vals.data()), t.vals.size());
        }
    }
    put_marker(o, 0xDA, 6 + 2 * nf);
    o.push_back(static_cast<char>(nf));
    for (const Component& c : s.comps) {
        o.push_back(static_cast<char>(c.id));
        o.push_back(static_cast<char>((c.td << 4) | c.ta));
    }
    o.append("\x00\x3F\x00", 3);
}

}  // namespace

bool jpeg_crop(const uint8_t* data, std::size_t size, const uint8_t* tables,
               std::size_t tables_size, const std::vector<CropRect>& rects,
               std::vector<std::string>& out) {
    Stream s;
    std::vector<Component> frame;
    if (tables_size && !parse(tables, tables_size, s, frame, true)) return false;
    s.app.clear();
    if (!parse(data, size, s, frame, false) || s.sof == 0) return false;
    const int nc = static_cast<int>(s.comps.size());
    if (nc == 1) s.comps[0].h = s.comps[0].v = 1;  // non-interleaved: one block per MCU
    int hmax = 1, vmax = 1, per_mcu = 0;
    for (const Component& c : s.comps) {
        hmax = c.h > hmax ? c.h : hmax;
        vmax = c.v > vmax ? c.v : vmax;
        per_mcu += c.h * c.v;
        if (s.dqt[c.tq].empty() || !s.dc[c.td].defined || !s.ac[c.ta].defined) return false;
    }
    if (per_mcu > 10) return false;
    const int mw = 8 * hmax, mh = 8 * vmax;
    const int cols = (s.width + mw - 1) / mw, rows = (s.height + mh - 1) / mh;
    // Every block takes at least 2 bits (a DC code and an EOB): refuse a frame the scan cannot
    // hold before allocating for it.
    const long long min_bits = 2LL * cols * rows * per_mcu;
    if (min_bits > 8LL * static_cast<long long>(s.end - s.scan) + 64) return false;
    // Which MCUs to keep: slot index per MCU (-1: decoded and dropped).
    std::vector<int32_t> slot(static_cast<std::size_t>(cols) * rows, -1);
    int32_t kept = 0;
    for (const CropRect& r : rects) {
        if (r.x < 0 || r.y < 0 || r.w <= 0 || r.h <= 0 || r.x % mw || r.y % mh) return false;
        if (r.x + r.w > s.width || r.y + r.h > s.height) return false;
        if ((r.w % mw && r.x + r.w != s.width) || (r.h % mh && r.y + r.h != s.height))
            return false;
        for (int my = r.y / mh; my < (r.y + r.h + mh - 1) / mh; ++my)
            for (int mx = r.x / mw; mx < (r.x + r.w + mw - 1) / mw; ++mx) {
                int32_t& k = slot[static_cast<std::size_t>(my) * cols + mx];
                if (k < 0) k = kept++;
            }
    }
    std::vector<int16_t> coef(static_cast<std::size_t>(kept) * per_mcu * 64);
    std::vector<int16_t> scratch(static_cast<std::size_t>(per_mcu) * 64);
    std::vector<uint64_t> nz(static_cast<std::size_t>(kept) * per_mcu + per_mcu);  // + scratch
    BitReader br{s.scan, s.end};
    std::array<int, 4> pred{};
    const long total = static_cast<long>(cols) * rows;
    for (long m = 0; m < total; ++m) {
        if (s.restart && m > 0 && m % s.restart == 0) {
            if (!br.restart(static_cast<int>(m / s.restart - 1))) return false;
            pred.fill(0);
        }
        const std::size_t first = static_cast<std::size_t>(slot[m] >= 0 ? slot[m] : kept) * per_mcu;
        int16_t* blk = slot[m] >= 0 ? coef.data() + first * 64 : scratch.data();
        uint64_t* mask = nz.data() + first;
        for (int ci = 0; ci < nc; ++ci) {
            const Component& c = s.comps[ci];
            for (int b = 0; b < c.h * c.v; ++b, blk += 64, ++mask)
                if (!decode_block(br, s.dc[c.td], s.ac[c.ta], pred[ci], blk, *mask)) return false;
        }
    }
    if (br.overrun()) return false;
    out.assign(rects.size(), std::string());
    for (std::size_t i = 0; i < rects.size(); ++i) {
        const CropRect& r = rects[i];
        std::string& o = out[i];
        o.reserve(1024 + static_cast<std::size_t>(s.end - s.scan));
        write_header(o, s, r.w, r.h);
        BitWriter bw{&o};
        pred.fill(0);
        for (int my = r.y / mh; my < (r.y + r.h + mh - 1) / mh; ++my)
            for (int mx = r.x / mw; mx < (r.x + r.w + mw - 1) / mw; ++mx) {
                const std::size_t first =
                    static_cast<std::size_t>(slot[static_cast<std::size_t>(my) * cols + mx]) *
                    per_mcu;
                const int16_t* blk = coef.data() + first * 64;
                const uint64_t* mask = nz.data() + first;
                for (int ci = 0; ci < nc; ++ci) {
                    const Component& c = s.comps[ci];
                    for (int b = 0; b < c.h * c.v; ++b, blk += 64, ++mask)
                        if (!encode_block(bw, s.dc[c.td], s.ac[c.ta], pred[ci], blk, *mask))
                            return false;
                }
            }
        bw.flush();
        o.append("\xFF\xD9", 2);
    }
    return true;
}

}  // namespace pf
