/*
 * Aligned tables for humans: a header row, columns two spaces apart, one
 * space of margin on the left, no trailing spaces.  Widths count UTF-8
 * code points so that "—" or "×" do not push columns out of line.
 */

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "dstackctl.h"


struct dsctl_table_s {
    int         ncols;
    int         header;     /* the first row is a header */
    int         nrows;      /* including the header */
    int         cap;
    char      **cells;      /* nrows * ncols */
    int        *align;
};


size_t
dsctl_text_width(const char *s)
{
    size_t  w = 0;

    for ( /* void */ ; *s; s++) {
        if (((unsigned char) *s & 0xc0) != 0x80) {
            w++;
        }
    }
    return w;
}


dsctl_table_t *
dsctl_table_new(int ncols, const char *const *headers)
{
    dsctl_table_t  *t;

    t = dsctl_xmalloc(sizeof(*t));
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    t->align = dsctl_xmalloc(sizeof(int) * ncols);
    memset(t->align, 0, sizeof(int) * ncols);
    if (headers != NULL) {
        t->header = 1;
        dsctl_table_add(t, headers);
    }
    return t;
}


void
dsctl_table_align(dsctl_table_t *t, int col, int align)
{
    if (col >= 0 && col < t->ncols) {
        t->align[col] = align;
    }
}


void
dsctl_table_add(dsctl_table_t *t, const char *const *cells)
{
    int  i;

    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->cells = dsctl_xrealloc(t->cells,
            sizeof(char *) * t->cap * t->ncols);
    }
    for (i = 0; i < t->ncols; i++) {
        t->cells[t->nrows * t->ncols + i] =
            dsctl_xstrdup(cells[i] != NULL ? cells[i] : "");
    }
    t->nrows++;
}


void
dsctl_table_addv(dsctl_table_t *t, ...)
{
    va_list       ap;
    const char  **cells;
    int           i;

    cells = dsctl_xmalloc(sizeof(char *) * t->ncols);
    va_start(ap, t);
    for (i = 0; i < t->ncols; i++) {
        cells[i] = va_arg(ap, const char *);
    }
    va_end(ap);
    dsctl_table_add(t, cells);
    free(cells);
}


int
dsctl_table_rows(const dsctl_table_t *t)
{
    return t->nrows - t->header;
}


void
dsctl_table_render(const dsctl_table_t *t, dsctl_str_t *out)
{
    size_t      *width, w, pad;
    int          r, c, last;
    const char  *cell;

    width = dsctl_xmalloc(sizeof(size_t) * t->ncols);
    for (c = 0; c < t->ncols; c++) {
        width[c] = 0;
        for (r = 0; r < t->nrows; r++) {
            w = dsctl_text_width(t->cells[r * t->ncols + c]);
            if (w > width[c]) {
                width[c] = w;
            }
        }
    }

    for (r = 0; r < t->nrows; r++) {
        /* the last column with text on this row: nothing pads after it */
        last = -1;
        for (c = 0; c < t->ncols; c++) {
            if (t->cells[r * t->ncols + c][0] != '\0'
                || t->align[c] == DSCTL_ALIGN_RIGHT)
            {
                last = c;
            }
        }
        dsctl_str_add(out, " ", 1);
        for (c = 0; c <= last; c++) {
            cell = t->cells[r * t->ncols + c];
            w = dsctl_text_width(cell);
            pad = width[c] - w;
            if (c > 0) {
                dsctl_str_add(out, "  ", 2);
            }
            if (t->align[c] == DSCTL_ALIGN_RIGHT) {
                while (pad--) {
                    dsctl_str_add(out, " ", 1);
                }
                dsctl_str_add(out, cell, strlen(cell));
            } else {
                dsctl_str_add(out, cell, strlen(cell));
                if (c < last) {
                    while (pad--) {
                        dsctl_str_add(out, " ", 1);
                    }
                }
            }
        }
        /* a row of empty cells is still a line, without the margin */
        if (last < 0) {
            out->len--;
            out->s[out->len] = '\0';
        }
        dsctl_str_add(out, "\n", 1);
    }
    free(width);
}


void
dsctl_table_print(const dsctl_table_t *t, FILE *out)
{
    dsctl_str_t  s = { 0 };

    dsctl_table_render(t, &s);
    if (s.s != NULL) {
        fputs(s.s, out);
    }
    dsctl_str_free(&s);
}


void
dsctl_table_free(dsctl_table_t *t)
{
    int  i;

    if (t == NULL) {
        return;
    }
    for (i = 0; i < t->nrows * t->ncols; i++) {
        free(t->cells[i]);
    }
    free(t->cells);
    free(t->align);
    free(t);
}
