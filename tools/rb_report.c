/* rb_report — summary, JSON, CSV and SVG output. See rb_report.h. */
#include "rb_report.h"

#include <errno.h>
#include <math.h>
#include <string.h>

static bool is_err_status(const struct rb_summary *s, unsigned st)
{
    return st < s->ok_lo || st > s->ok_hi;
}

uint64_t rb_report_errors(const struct rb_summary *s)
{
    uint64_t n = 0;
    for (unsigned st = 0; st < RB_STATUS_MAX; st++)
        if (is_err_status(s, st)) n += s->status[st];
    for (unsigned k = 1; k < BENCH__END_COUNT; k++)
        n += s->ends[k];
    return n;
}

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

/* "812 us", "12.3 ms", "1.20 s" */
static const char *fmt_lat(char *b, size_t n, uint64_t ns)
{
    if (ns < 10000000ull)
        snprintf(b, n, "%.0f us", us(ns));
    else if (ns < 10000000000ull)
        snprintf(b, n, "%.2f ms", (double)ns / 1e6);
    else
        snprintf(b, n, "%.2f s", (double)ns / 1e9);
    return b;
}

static double rps_of(const struct rb_summary *s)
{
    return s->duration_s > 0 ? (double)s->requests / s->duration_s : 0.0;
}

void rb_report_text(FILE *f, const struct rb_summary *s)
{
    char b[5][32];
    const struct rb_hist *h = s->hist;
    fprintf(f, "scenario   %s %s\n", s->scenario, s->url);
    if (s->rate > 0)
        fprintf(f, "load       open loop %.0f req/s, %u connections, depth %u, %u threads\n",
                s->rate, s->conns, s->depth, s->threads);
    else
        fprintf(f, "load       closed loop, %u connections, depth %u, %u threads\n", s->conns,
                s->depth, s->threads);
    fprintf(f, "requests   %llu in %.3f s = %.1f req/s (sent %llu, unanswered %llu)\n",
            (unsigned long long)s->requests, s->duration_s, rps_of(s), (unsigned long long)s->sent,
            (unsigned long long)s->unanswered);
    fprintf(f, "latency    p50 %s  p90 %s  p99 %s  p99.9 %s  max %s%s\n",
            fmt_lat(b[0], 32, rb_hist_percentile(h, 50)),
            fmt_lat(b[1], 32, rb_hist_percentile(h, 90)),
            fmt_lat(b[2], 32, rb_hist_percentile(h, 99)),
            fmt_lat(b[3], 32, rb_hist_percentile(h, 99.9)), fmt_lat(b[4], 32, h->max),
            s->rate > 0 ? "  (from intended send times)" : "");
    fprintf(f, "status    ");
    bool any = false;
    for (unsigned st = 0; st < RB_STATUS_MAX; st++)
        if (s->status[st]) {
            fprintf(f, " %u: %llu", st, (unsigned long long)s->status[st]);
            any = true;
        }
    fprintf(f, "%s\n", any ? "" : " (no responses)");
    uint64_t total = rb_report_errors(s);
    fprintf(f, "errors     %llu", (unsigned long long)total);
    if (total) {
        fprintf(f, " (");
        const char *sep = "";
        for (unsigned st = 0; st < RB_STATUS_MAX; st++)
            if (s->status[st] && is_err_status(s, st)) {
                fprintf(f, "%sHTTP %u: %llu", sep, st, (unsigned long long)s->status[st]);
                sep = ", ";
            }
        for (unsigned k = 1; k < BENCH__END_COUNT; k++)
            if (s->ends[k]) {
                fprintf(f, "%s%s: %llu", sep, bench_end_name((enum bench_end)k),
                        (unsigned long long)s->ends[k]);
                sep = ", ";
            }
        fprintf(f, ")");
    }
    fprintf(f, "\n");
}

void rb_report_json(FILE *f, const struct rb_summary *s)
{
    const struct rb_hist *h = s->hist;
    fprintf(f, "{\"scenario\":\"%s\",\"requests\":%llu,\"duration_s\":%.6f,\"rps\":%.1f,",
            s->scenario, (unsigned long long)s->requests, s->duration_s, rps_of(s));
    fprintf(f, "\"errors\":{\"total\":%llu", (unsigned long long)rb_report_errors(s));
    for (unsigned st = 0; st < RB_STATUS_MAX; st++)
        if (s->status[st] && is_err_status(s, st))
            fprintf(f, ",\"http_%u\":%llu", st, (unsigned long long)s->status[st]);
    for (unsigned k = 1; k < BENCH__END_COUNT; k++)
        if (s->ends[k])
            fprintf(f, ",\"%s\":%llu", bench_end_name((enum bench_end)k),
                    (unsigned long long)s->ends[k]);
    fprintf(f,
            "},\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
            "\"max\":%.1f},",
            us(rb_hist_percentile(h, 50)), us(rb_hist_percentile(h, 90)),
            us(rb_hist_percentile(h, 99)), us(rb_hist_percentile(h, 99.9)), us(h->max));
    fprintf(f, "\"sent\":%llu,\"unanswered\":%llu,\"status\":{", (unsigned long long)s->sent,
            (unsigned long long)s->unanswered);
    const char *sep = "";
    for (unsigned st = 0; st < RB_STATUS_MAX; st++)
        if (s->status[st]) {
            fprintf(f, "%s\"%u\":%llu", sep, st, (unsigned long long)s->status[st]);
            sep = ",";
        }
    fprintf(f, "},\"threads\":%u,\"connections\":%u,\"depth\":%u,\"rate\":%.1f", s->threads,
            s->conns, s->depth, s->rate);
    if (s->verify) fprintf(f, ",\"verify\":\"%s\"", s->verify);
    fprintf(f, "}\n");
}

int rb_report_csv(const char *path, const struct rb_row *rows, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f) return -errno;
    fprintf(f, "second,rps,p99_us,errors\n");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%u,%.1f,%.1f,%llu\n", rows[i].sec, rows[i].rps, rows[i].p99_us,
                (unsigned long long)rows[i].errors);
    return fclose(f) == 0 ? 0 : -errno;
}

/* A round axis top >= v (steps of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^k): the data
   fills at least 5/6 of the height. */
static double nice_top(double v)
{
    static const double steps[] = {1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8};
    if (v <= 0) return 1;
    double p = pow(10, floor(log10(v)));
    for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++)
        if (steps[k] * p >= v) return steps[k] * p;
    return 10 * p;
}

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '"')
            fputs("&quot;", f);
        else
            fputc(*s, f);
    }
}

int rb_report_svg(const char *path, const char *title, const struct rb_row *rows, size_t n)
{
    /* 800 x 420 with room for both axes' labels */
    const double W = 800, H = 420, L = 80, R = 80, T = 50, B = 50;
    const double pw = W - L - R, ph = H - T - B;
    double max_rps = 0, max_p99 = 0;
    uint32_t max_sec = 1;
    for (size_t i = 0; i < n; i++) {
        if (rows[i].rps > max_rps) max_rps = rows[i].rps;
        if (rows[i].p99_us / 1000.0 > max_p99) max_p99 = rows[i].p99_us / 1000.0;
        if (rows[i].sec + 1 > max_sec) max_sec = rows[i].sec + 1;
    }
    double top_rps = nice_top(max_rps * 1.05), top_p99 = nice_top(max_p99 * 1.05);
    FILE *f = fopen(path, "w");
    if (!f) return -errno;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, H, W, H);
    fprintf(f, "<text x=\"%.0f\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">", W / 2);
    xml_text(f, title);
    fprintf(f, "</text>\n");
    for (int g = 0; g <= 5; g++) {
        double y = T + ph - ph * g / 5.0;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#1f77b4\">%.0f</text>\n"
                "<text x=\"%.1f\" y=\"%.1f\" fill=\"#d62728\">%.3g</text>\n",
                L, y, L + pw, y, L - 6, y + 4, top_rps * g / 5.0, L + pw + 6, y + 4,
                top_p99 * g / 5.0);
    }
    uint32_t xstep = max_sec <= 10 ? 1 : max_sec <= 60 ? 5 : max_sec <= 300 ? 30 : 60;
    for (uint32_t s = 0; s <= max_sec; s += xstep) {
        double x = L + pw * s / max_sec;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%u</text>\n",
                x, T, x, T + ph, x, T + ph + 16, s);
    }
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
            "stroke=\"#333\"/>\n",
            L, T, pw, ph);
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">seconds</text>\n"
            "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\" "
            "fill=\"#1f77b4\">requests/s</text>\n"
            "<text transform=\"translate(%.1f %.1f) rotate(90)\" text-anchor=\"middle\" "
            "fill=\"#d62728\">p99 latency (ms)</text>\n",
            L + pw / 2, H - 12, T + ph / 2, W - 18, T + ph / 2);
    /* each second's value is drawn at the middle of that second */
    const char *color[2] = {"#1f77b4", "#d62728"};
    for (int line = 0; line < 2; line++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                color[line]);
        for (size_t i = 0; i < n; i++) {
            double v = line == 0 ? rows[i].rps / top_rps : rows[i].p99_us / 1000.0 / top_p99;
            fprintf(f, "%s%.1f,%.1f", i ? " " : "", L + pw * (rows[i].sec + 0.5) / max_sec,
                    T + ph - ph * v);
        }
        fprintf(f, "\"/>\n");
        if (n <= 60)
            for (size_t i = 0; i < n; i++) {
                double v = line == 0 ? rows[i].rps / top_rps : rows[i].p99_us / 1000.0 / top_p99;
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n",
                        L + pw * (rows[i].sec + 0.5) / max_sec, T + ph - ph * v, color[line]);
            }
    }
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"3\" fill=\"#1f77b4\"/>"
            "<text x=\"%.1f\" y=\"%.1f\">throughput (req/s)</text>\n"
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"3\" fill=\"#d62728\"/>"
            "<text x=\"%.1f\" y=\"%.1f\">p99 latency (ms)</text>\n",
            L, T - 12.0, L + 16, T - 8.0, L + 160, T - 12.0, L + 176, T - 8.0);
    fprintf(f, "</svg>\n");
    return fclose(f) == 0 ? 0 : -errno;
}

void rb_report_sweep(FILE *f, const struct rb_sweep_row *rows, size_t n)
{
    fprintf(f, "sweep      %12s %12s %9s %9s %13s %8s\n", "offered/s", "achieved/s", "p50_ms",
            "p99_ms", "cpu_us/req", "errors");
    for (size_t i = 0; i < n; i++) {
        char cpu[32];
        if (rows[i].cpu_us_per_req >= 0)
            snprintf(cpu, sizeof(cpu), "%.2f", rows[i].cpu_us_per_req);
        else
            snprintf(cpu, sizeof(cpu), "-");
        fprintf(f, "sweep      %12.0f %12.0f %9.3f %9.3f %13s %8llu\n", rows[i].offered,
                rows[i].rps, rows[i].p50_ms, rows[i].p99_ms, cpu,
                (unsigned long long)rows[i].errors);
    }
}

int rb_report_sweep_svg(const char *path, const char *title, const struct rb_sweep_row *rows,
                        size_t n)
{
    const double W = 800, H = 420, L = 80, R = 80, T = 50, B = 50;
    const double pw = W - L - R, ph = H - T - B;
    double max_x = 0, max_cpu = 0, max_p99 = 0;
    for (size_t i = 0; i < n; i++) {
        if (rows[i].offered > max_x) max_x = rows[i].offered;
        if (rows[i].cpu_us_per_req > max_cpu) max_cpu = rows[i].cpu_us_per_req;
        if (rows[i].p99_ms > max_p99) max_p99 = rows[i].p99_ms;
    }
    double top_x = nice_top(max_x * 1.05), top_cpu = nice_top(max_cpu * 1.05),
           top_p99 = nice_top(max_p99 * 1.05);
    FILE *f = fopen(path, "w");
    if (!f) return -errno;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%.0f\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">",
            W, H, W, H, W / 2);
    xml_text(f, title);
    fprintf(f, "</text>\n");
    for (int g = 0; g <= 5; g++) {
        double y = T + ph - ph * g / 5.0, x = L + pw * g / 5.0;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#1f77b4\">%.3g</text>\n"
                "<text x=\"%.1f\" y=\"%.1f\" fill=\"#d62728\">%.3g</text>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n",
                L, y, L + pw, y, L - 6, y + 4, top_cpu * g / 5.0, L + pw + 6, y + 4,
                top_p99 * g / 5.0, x, T + ph + 16, top_x * g / 5.0);
    }
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">offered req/s</text>\n"
            "<text x=\"16\" y=\"%.1f\" fill=\"#1f77b4\" transform=\"rotate(-90 16 %.1f)\" "
            "text-anchor=\"middle\">server CPU per request (us)</text>\n"
            "<text x=\"%.1f\" y=\"%.1f\" fill=\"#d62728\" transform=\"rotate(90 %.1f %.1f)\" "
            "text-anchor=\"middle\">p99 latency (ms)</text>\n",
            L + pw / 2, H - 10, T + ph / 2, T + ph / 2, W - 16, T + ph / 2, W - 16, T + ph / 2);
    const char *color[2] = {"#1f77b4", "#d62728"};
    for (int k = 0; k < 2; k++) {
        fprintf(f, "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"%s\" points=\"", color[k]);
        for (size_t i = 0; i < n; i++) {
            double v = k ? rows[i].p99_ms / top_p99 : rows[i].cpu_us_per_req / top_cpu;
            if (v < 0) continue;
            fprintf(f, "%.1f,%.1f ", L + pw * rows[i].offered / top_x, T + ph - ph * v);
        }
        fprintf(f, "\"/>\n");
    }
    fprintf(f, "</svg>\n");
    return fclose(f) == 0 ? 0 : -errno;
}
