/*
 * Unit tests of the service spec parser and validator (common/ds_spec.c).
 *
 * Besides the cases below, runs every file of the case directories:
 *   t/spec/bad/NAME.dstack.yml   must fail with exactly NAME.err
 *   t/spec/good/NAME.dstack.yml  must give exactly NAME.json
 * Files are parsed under their base name, so the messages do not depend
 * on where the tests run from.  The directory is argv[1], else
 * $T_SPEC_DIR, else "t/spec" (the repository root being the default
 * working directory).
 */

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ds_spec.h"


static const char  *spec_dir = "t/spec";


static cJSON *
parse_ok(const char *yaml)
{
    int       rc;
    cJSON    *out;
    ds_err_t  err;

    err.msg[0] = '\0';
    rc = ds_spec_parse_yaml("t.dstack.yml", yaml, strlen(yaml), &out, &err);
    if (rc != DS_OK) {
        print_error("unexpected error: %s\n", err.msg);
    }
    assert_int_equal(rc, DS_OK);
    assert_non_null(out);

    return out;
}


static void
parse_err(const char *yaml, const char *expected)
{
    int       rc;
    cJSON    *out;
    ds_err_t  err;

    rc = ds_spec_parse_yaml("t.dstack.yml", yaml, strlen(yaml), &out, &err);
    assert_int_equal(rc, DS_EINVAL);
    assert_null(out);
    assert_string_equal(err.msg, expected);
}


static void
json_err(const char *json, const char *expected)
{
    int       rc;
    cJSON    *in, *out;
    ds_err_t  err;

    in = cJSON_Parse(json);
    assert_non_null(in);

    rc = ds_spec_validate_json(in, &out, &err);
    assert_int_equal(rc, DS_EINVAL);
    assert_null(out);
    assert_string_equal(err.msg, expected);

    cJSON_Delete(in);
}


/* validate_json(x) == x, printed */
static void
assert_idempotent(const cJSON *normalized)
{
    cJSON     *again;
    char      *a, *b;
    ds_err_t   err;

    if (ds_spec_validate_json(normalized, &again, &err) != DS_OK) {
        print_error("normalized spec rejected: %s\n", err.msg);
        fail();
    }

    a = cJSON_PrintUnformatted(normalized);
    b = cJSON_PrintUnformatted(again);
    assert_string_equal(a, b);

    cJSON_free(a);
    cJSON_free(b);
    cJSON_Delete(again);
}


static void
spec_of(const char *yaml, ds_spec_t *spec)
{
    cJSON     *n;
    ds_err_t   err;

    n = parse_ok(yaml);
    assert_idempotent(n);

    if (ds_spec_from_json(n, spec, &err) != DS_OK) {
        print_error("from_json: %s\n", err.msg);
        fail();
    }

    cJSON_Delete(n);
}


static char *
read_file(const char *path, size_t *len)
{
    FILE    *f;
    char    *buf;
    long     n;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    buf = malloc((size_t) n + 1);
    assert_non_null(buf);
    *len = fread(buf, 1, (size_t) n, f);
    buf[*len] = '\0';
    fclose(f);

    return buf;
}


static int
is_case(const struct dirent *d)
{
    size_t  n;

    n = strlen(d->d_name);
    return n > 11 && strcmp(d->d_name + n - 11, ".dstack.yml") == 0;
}


/* ---- the case directories ------------------------------------------------ */

static void
test_bad_cases(void **state)
{
    int              i, n, failed;
    char             path[512], errpath[512];
    char            *text, *want, *nl;
    size_t           len, wlen;
    cJSON           *out;
    ds_err_t         err;
    struct dirent  **names;

    (void) state;

    snprintf(path, sizeof(path), "%s/bad", spec_dir);
    n = scandir(path, &names, is_case, alphasort);
    if (n < 0) {
        print_error("cannot read %s\n", path);
        fail();
    }

    failed = 0;

    for (i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/bad/%s", spec_dir,
                 names[i]->d_name);
        snprintf(errpath, sizeof(errpath), "%s/bad/%.*s.err", spec_dir,
                 (int) (strlen(names[i]->d_name) - 11), names[i]->d_name);

        text = read_file(path, &len);
        want = read_file(errpath, &wlen);
        assert_non_null(text);
        if (want == NULL) {
            print_error("%s: missing\n", errpath);
            failed++;
            free(text);
            continue;
        }
        nl = strchr(want, '\n');
        if (nl) {
            *nl = '\0';
        }

        err.msg[0] = '\0';
        if (ds_spec_parse_yaml(names[i]->d_name, text, len, &out, &err)
            != DS_EINVAL)
        {
            print_error("%s: accepted\n", path);
            cJSON_Delete(out);
            failed++;

        } else if (strcmp(err.msg, want) != 0) {
            print_error("%s:\n  want: %s\n  got:  %s\n", path, want,
                        err.msg);
            failed++;
        }

        free(text);
        free(want);
        free(names[i]);
    }
    free(names);

    print_message("%d bad cases\n", n);
    assert_int_equal(failed, 0);
    assert_true(n >= 35);
}


/*
 * The warnings of a good case are exactly the lines of NAME.warn (none
 * without one), and the daemon, validating the normalized spec again,
 * gives as many, each naming the same field ("spec.tags: ignored: ...").
 */
static int
check_warnings(const char *jpath, const cJSON *warns, const cJSON *out)
{
    int           failed;
    char          wpath[512], *want, *line, *nl;
    size_t        wlen, len;
    cJSON        *again, *jw;
    const cJSON  *it, *jt;
    ds_err_t      err;

    len = strlen(jpath) - 5;
    snprintf(wpath, sizeof(wpath), "%.*s.warn", (int) len, jpath);
    want = read_file(wpath, &wlen);

    failed = 0;
    it = warns->child;

    for (line = want; line && *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        if (it == NULL || strcmp(it->valuestring, line) != 0) {
            print_error("%s:\n  want: %s\n  got:  %s\n", wpath, line,
                        it ? it->valuestring : "(none)");
            failed++;
        }
        it = it ? it->next : NULL;
    }
    for ( /* void */ ; it; it = it->next) {
        print_error("%s: unexpected warning: %s\n", wpath, it->valuestring);
        failed++;
    }
    free(want);

    jw = cJSON_CreateArray();
    assert_non_null(jw);
    assert_int_equal(ds_spec_validate_json_warn(out, &again, jw, &err),
                     DS_OK);
    assert_int_equal(cJSON_GetArraySize(jw), cJSON_GetArraySize(warns));

    /* "F:L:C: tags: ignored: x" is "spec.tags: ignored: x"; the daemon
       walks the fields in the normalized order, the file in its own */
    for (it = warns->child; it; it = it->next) {
        line = strstr(it->valuestring, ": ");
        assert_non_null(line);
        for (jt = jw->child; jt; jt = jt->next) {
            if (strncmp(jt->valuestring, "spec.", 5) == 0
                && strcmp(jt->valuestring + 5, line + 2) == 0)
            {
                break;
            }
        }
        if (jt == NULL) {
            print_error("%s: no json warning for %s\n", wpath,
                        it->valuestring);
            failed++;
        }
    }

    cJSON_Delete(again);
    cJSON_Delete(jw);
    return failed;
}


static void
test_good_cases(void **state)
{
    int              i, n, failed;
    char             path[512], jpath[512];
    char            *text, *json, *a, *b;
    size_t           len, jlen;
    cJSON           *out, *want, *warns;
    ds_err_t         err;
    ds_spec_t        spec;
    struct dirent  **names;

    (void) state;

    snprintf(path, sizeof(path), "%s/good", spec_dir);
    n = scandir(path, &names, is_case, alphasort);
    if (n < 0) {
        print_error("cannot read %s\n", path);
        fail();
    }

    failed = 0;

    for (i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/good/%s", spec_dir,
                 names[i]->d_name);
        snprintf(jpath, sizeof(jpath), "%s/good/%.*s.json", spec_dir,
                 (int) (strlen(names[i]->d_name) - 11), names[i]->d_name);

        text = read_file(path, &len);
        json = read_file(jpath, &jlen);
        assert_non_null(text);
        assert_non_null(json);

        want = cJSON_Parse(json);
        assert_non_null(want);

        warns = cJSON_CreateArray();
        assert_non_null(warns);

        if (ds_spec_parse_yaml_warn(names[i]->d_name, text, len, &out,
                                    warns, &err) != DS_OK)
        {
            print_error("%s\n", err.msg);
            failed++;

        } else {
            failed += check_warnings(jpath, warns, out);

            a = cJSON_PrintUnformatted(out);
            b = cJSON_PrintUnformatted(want);
            if (strcmp(a, b) != 0) {
                print_error("%s:\n  want: %s\n  got:  %s\n", path, b, a);
                failed++;
            }
            cJSON_free(a);
            cJSON_free(b);

            assert_idempotent(out);

            if (ds_spec_from_json(out, &spec, &err) != DS_OK) {
                print_error("%s: from_json: %s\n", path, err.msg);
                failed++;
            }
            ds_spec_free(&spec);
            cJSON_Delete(out);
        }

        cJSON_Delete(want);
        cJSON_Delete(warns);
        free(names[i]);
        free(text);
        free(json);
    }
    free(names);

    print_message("%d good cases\n", n);
    assert_int_equal(failed, 0);
    assert_true(n >= 8);
}


/* ---- shapes -------------------------------------------------------------- */

static void
test_seed(void **state)
{
    ds_spec_t  spec;

    (void) state;

    spec_of("type: service\n"
            "\n"
            "python: \"3.11\"\n"
            "env:\n"
            "  - MODEL=NousResearch/Llama-2-7b-chat-hf\n"
            "commands:\n"
            "  - pip install vllm\n"
            "  - python -m vllm.entrypoints.openai.api_server --model $MODEL "
            "--port 8000\n"
            "port: 8000\n"
            "\n"
            "resources:\n"
            "  gpu: 80GB\n"
            "\n"
            "# (Optional) Enable the OpenAI-compatible endpoint\n"
            "model:\n"
            "  format: openai\n"
            "  type: chat\n"
            "  name: NousResearch/Llama-2-7b-chat-hf\n", &spec);

    assert_null(spec.name);
    assert_int_equal(spec.port, 8000);
    assert_int_equal(spec.local_port, 80);
    assert_string_equal(spec.python, "3.11");
    assert_null(spec.image);
    assert_int_equal(spec.n_commands, 2);
    assert_string_equal(spec.commands[0], "pip install vllm");
    assert_int_equal(spec.n_env, 1);
    assert_string_equal(spec.env[0].name, "MODEL");
    assert_string_equal(spec.env[0].value, "NousResearch/Llama-2-7b-chat-hf");

    assert_int_equal(spec.resources.cpu.min, 2);
    assert_true(spec.resources.cpu.max == DS_SPEC_UNLIMITED);
    assert_int_equal(spec.resources.memory_mb.min, 8192);
    assert_int_equal(spec.resources.disk_mb.min, 102400);
    assert_int_equal(spec.resources.gpu.count.min, 1);
    assert_true(spec.resources.gpu.count.max == DS_SPEC_UNLIMITED);
    assert_int_equal(spec.resources.gpu.memory_mb.min, 80 * 1024);
    assert_int_equal(spec.resources.gpu.memory_mb.max, 80 * 1024);
    assert_int_equal(spec.resources.gpu.n_names, 0);

    assert_int_equal(spec.replicas.min, 1);
    assert_int_equal(spec.replicas.max, 1);
    assert_false(spec.scaling.enabled);
    assert_true(spec.auth);
    assert_int_equal(spec.https, DS_SPEC_HTTPS_ON);

    assert_true(spec.model.enabled);
    assert_string_equal(spec.model.name, "NousResearch/Llama-2-7b-chat-hf");
    assert_int_equal(spec.model.format, DS_MODEL_OPENAI);
    assert_string_equal(spec.model.prefix, "/v1");

    /* no probes and an openai model: dstack's chat completion probe */
    assert_true(spec.probes_default);
    assert_int_equal(spec.n_probes, 1);
    assert_string_equal(spec.probes[0].url, "/v1/chat/completions");
    assert_int_equal(spec.probes[0].method, DS_SPEC_METHOD_POST);
    assert_int_equal(spec.probes[0].n_headers, 1);
    assert_string_equal(spec.probes[0].headers[0].value, "application/json");
    assert_string_equal(spec.probes[0].body,
                        "{\"model\":\"NousResearch/Llama-2-7b-chat-hf\","
                        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                        "\"max_tokens\":1}");
    assert_int_equal(spec.probes[0].timeout, 30);

    assert_int_equal(spec.spot_policy, DS_SPEC_SPOT_ONDEMAND);
    assert_true(spec.max_duration == DS_SPEC_OFF);
    assert_int_equal(spec.stop_duration, 300);
    assert_true(spec.strip_prefix);
    assert_int_equal(spec.gateway, DS_SPEC_GATEWAY_DEFAULT);
    assert_null(spec.backends);

    ds_spec_free(&spec);
}


static void
test_model_shorthand(void **state)
{
    cJSON      *n, *m;
    ds_spec_t   spec;

    (void) state;

    n = parse_ok("type: service\nimage: vllm/vllm-openai\nport: 8000\n"
                 "model: meta-llama/Llama-3.1-8B-Instruct\n");
    m = cJSON_GetObjectItemCaseSensitive(n, "model");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m, "type")
                            ->valuestring, "chat");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m, "name")
                            ->valuestring, "meta-llama/Llama-3.1-8B-Instruct");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m, "format")
                            ->valuestring, "openai");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m, "prefix")
                            ->valuestring, "/v1");
    assert_int_equal(cJSON_GetArraySize(m), 4);
    assert_idempotent(n);
    cJSON_Delete(n);

    /* an explicit prefix; tgi has none, and no default probe */
    spec_of("type: service\nimage: x\nport: 8000\n"
            "model: {name: m, format: openai, prefix: /api/v1/}\n", &spec);
    assert_string_equal(spec.model.prefix, "/api/v1/");
    assert_string_equal(spec.probes[0].url, "/api/v1/chat/completions");
    ds_spec_free(&spec);

    spec_of("type: service\nimage: x\nport: 8000\n"
            "model: {name: m, format: tgi, eos_token: </s>}\n", &spec);
    assert_int_equal(spec.model.format, DS_MODEL_TGI);
    assert_null(spec.model.prefix);
    assert_string_equal(spec.model.eos_token, "</s>");
    assert_int_equal(spec.n_probes, 0);
    assert_false(spec.probes_default);
    ds_spec_free(&spec);

    /* probes: [] turns the default off */
    spec_of("type: service\nimage: x\nport: 8000\nmodel: m\nprobes: []\n",
            &spec);
    assert_int_equal(spec.n_probes, 0);
    assert_false(spec.probes_default);
    ds_spec_free(&spec);
}


typedef struct {
    const char  *gpu;
    int          vendor;
    const char  *names;             /* comma-separated, "" for none */
    uint64_t     cmin, cmax;
    uint64_t     mmin, mmax;        /* MB */
} gpu_case_t;

#define INF  DS_SPEC_UNLIMITED
#define GB   1024ULL

static const gpu_case_t  gpu_cases[] = {
    { "80GB", 0, "", 1, INF, 80 * GB, 80 * GB },
    { "A100", 0, "A100", 1, INF, 0, INF },
    { "A100:2", 0, "A100", 2, 2, 0, INF },
    { "A100:40GB:2", 0, "A100", 2, 2, 40 * GB, 40 * GB },
    { "2:40GB:A100", 0, "A100", 2, 2, 40 * GB, 40 * GB },
    { "24GB..", 0, "", 1, INF, 24 * GB, INF },
    { "..48GB", 0, "", 1, INF, 0, 48 * GB },
    { "24GB..80GB:1..4", 0, "", 1, 4, 24 * GB, 80 * GB },
    { "nvidia:H100,A100:1..8", DS_SPEC_VENDOR_NVIDIA, "H100,A100", 1, 8,
      0, INF },
    { "AMD:MI300X:8", DS_SPEC_VENDOR_AMD, "MI300X", 8, 8, 0, INF },
    { "tpu:v5litepod", DS_SPEC_VENDOR_GOOGLE, "v5litepod", 1, INF, 0, INF },
    { "2..", 0, "", 2, INF, 0, INF },
    { "0", 0, "", 0, 0, 0, INF },
    { "512MB..1TB:RTX4090", 0, "RTX4090", 1, INF, 512, 1024 * GB },
    { " A10G : 24 GB ", 0, "A10G", 1, INF, 24 * GB, 24 * GB },
    { "1.5GB", 0, "", 1, INF, 1536, 1536 },
};


static void
test_gpu_syntax(void **state)
{
    size_t      i, k;
    char        yaml[256], names[128];
    ds_spec_t   spec;

    (void) state;

    for (i = 0; i < sizeof(gpu_cases) / sizeof(gpu_cases[0]); i++) {
        snprintf(yaml, sizeof(yaml), "type: service\ncommands: [x]\n"
                 "port: 8000\nresources:\n  gpu: \"%s\"\n", gpu_cases[i].gpu);
        spec_of(yaml, &spec);

        names[0] = '\0';
        for (k = 0; k < spec.resources.gpu.n_names; k++) {
            strcat(names, k ? "," : "");
            strcat(names, spec.resources.gpu.names[k]);
        }

        print_message("gpu: %s\n", gpu_cases[i].gpu);
        assert_int_equal(spec.resources.gpu.vendor, gpu_cases[i].vendor);
        assert_string_equal(names, gpu_cases[i].names);
        assert_true(spec.resources.gpu.count.min == gpu_cases[i].cmin);
        assert_true(spec.resources.gpu.count.max == gpu_cases[i].cmax);
        assert_true(spec.resources.gpu.memory_mb.min == gpu_cases[i].mmin);
        assert_true(spec.resources.gpu.memory_mb.max == gpu_cases[i].mmax);

        ds_spec_free(&spec);
    }

    /* a number is a count */
    spec_of("type: service\ncommands: [x]\nport: 8000\nresources:\n"
            "  gpu: 2\n", &spec);
    assert_int_equal(spec.resources.gpu.count.min, 2);
    assert_int_equal(spec.resources.gpu.count.max, 2);
    ds_spec_free(&spec);

    /* the mapping form; a bare size in a file is GB, as in dstack */
    spec_of("type: service\ncommands: [x]\nport: 8000\nresources:\n"
            "  gpu:\n    name: H100\n    count: 1..2\n    memory: 80\n"
            "    total_memory: 160GB..\n    vendor: nvidia\n", &spec);
    assert_int_equal(spec.resources.gpu.vendor, DS_SPEC_VENDOR_NVIDIA);
    assert_int_equal(spec.resources.gpu.n_names, 1);
    assert_string_equal(spec.resources.gpu.names[0], "H100");
    assert_int_equal(spec.resources.gpu.count.min, 1);
    assert_int_equal(spec.resources.gpu.count.max, 2);
    assert_int_equal(spec.resources.gpu.memory_mb.min, 80 * GB);
    assert_int_equal(spec.resources.gpu.total_memory_mb.min, 160 * GB);
    assert_true(spec.resources.gpu.total_memory_mb.max == INF);
    ds_spec_free(&spec);

    /* no gpu at all: any number, none included */
    spec_of("type: service\ncommands: [x]\nport: 8000\n", &spec);
    assert_int_equal(spec.resources.gpu.count.min, 0);
    assert_true(spec.resources.gpu.count.max == INF);
    ds_spec_free(&spec);

    parse_err("type: service\ncommands: [x]\nport: 8000\nresources:\n"
              "  gpu: A100::2\n",
              "t.dstack.yml:5:8: resources.gpu: "
              "invalid GPU spec \"A100::2\": empty part");
    parse_err("type: service\ncommands: [x]\nport: 8000\nresources:\n"
              "  gpu: nvidia:amd\n",
              "t.dstack.yml:5:8: resources.gpu: "
              "invalid GPU spec \"nvidia:amd\": more than "
              "one vendor");
    parse_err("type: service\ncommands: [x]\nport: 8000\nresources:\n"
              "  gpu: A100,:2\n",
              "t.dstack.yml:5:8: resources.gpu: "
              "invalid GPU spec \"A100,:2\": empty name");
    parse_err("type: service\ncommands: [x]\nport: 8000\nresources:\n"
              "  gpu: 2:4\n",
              "t.dstack.yml:5:8: resources.gpu: "
              "invalid GPU spec \"2:4\": more than one "
              "count");
}


static void
test_cpu_memory_disk(void **state)
{
    ds_spec_t  spec;

    (void) state;

    spec_of("type: service\ncommands: [x]\nport: 8000\nresources:\n"
            "  cpu: x86:8..\n  memory: 1.5GB..1TB\n  disk: 200GB\n"
            "  shm_size: 16GB\n", &spec);
    assert_int_equal(spec.resources.cpu_arch, DS_SPEC_ARCH_X86);
    assert_int_equal(spec.resources.cpu.min, 8);
    assert_true(spec.resources.cpu.max == INF);
    assert_int_equal(spec.resources.memory_mb.min, 1536);
    assert_int_equal(spec.resources.memory_mb.max, 1024 * GB);
    assert_int_equal(spec.resources.disk_mb.min, 200 * GB);
    assert_int_equal(spec.resources.disk_mb.max, 200 * GB);
    assert_int_equal(spec.resources.shm_size_mb, 16 * GB);
    ds_spec_free(&spec);

    spec_of("type: service\ncommands: [x]\nport: 8000\nresources:\n"
            "  cpu: {arch: arm64, count: 2..4}\n  memory: 16\n"
            "  disk: {size: 512MB..}\n", &spec);
    assert_int_equal(spec.resources.cpu_arch, DS_SPEC_ARCH_ARM);
    assert_int_equal(spec.resources.cpu.min, 2);
    assert_int_equal(spec.resources.cpu.max, 4);
    assert_int_equal(spec.resources.memory_mb.min, 16 * GB);
    assert_int_equal(spec.resources.disk_mb.min, 512);
    ds_spec_free(&spec);

    /* dstack's old {min, max} form of cpu */
    spec_of("type: service\ncommands: [x]\nport: 8000\nresources:\n"
            "  cpu: {min: 4}\n", &spec);
    assert_int_equal(spec.resources.cpu_arch, DS_SPEC_ARCH_ANY);
    assert_int_equal(spec.resources.cpu.min, 4);
    assert_true(spec.resources.cpu.max == INF);
    ds_spec_free(&spec);

    parse_err("type: service\ncommands: [x]\nport: 8000\nresources:\n"
              "  cpu: 2..1\n",
              "t.dstack.yml:5:8: resources.cpu: "
              "invalid CPU count \"2..1\": the minimum is "
              "greater than the maximum");
    parse_err("type: service\ncommands: [x]\nport: 8000\nresources:\n"
              "  memory: {min: 16GB, max: 8GB}\n",
              "t.dstack.yml:5:11: resources.memory: "
              "invalid memory size: the minimum 16384 is "
              "greater than the maximum 8192");
    parse_err("type: service\ncommands: [x]\nport: 8000\nresources:\n"
              "  cpu: -1\n",
              "t.dstack.yml:5:8: resources.cpu: "
              "invalid CPU count -1: must not be negative");
    parse_err("type: service\ncommands: [x]\nport: 8000\nresources:\n"
              "  cpu: 2.5\n",
              "t.dstack.yml:5:8: resources.cpu: "
              "invalid CPU count 2.5: expected a whole "
              "number");
}


typedef struct {
    const char  *value;
    uint32_t     secs;              /* 0: an error */
} duration_case_t;

static const duration_case_t  duration_cases[] = {
    { "30s", 30 }, { "5m", 300 }, { "1h", 3600 }, { "1d", 86400 },
    { "2w", 14 * 86400 }, { "45", 45 }, { "\"45\"", 45 }, { "90 s", 90 },
    { "0", 1 /* 0, checked below */ }, { "off", DS_SPEC_OFF },
    { "\"off\"", DS_SPEC_OFF }, { "false", DS_SPEC_OFF },
    { "5x", 0 }, { "-1", 0 }, { "1.5h", 0 }, { "m", 0 }, { "1h30m", 0 },
    { "[1]", 0 }, { "99999999999", 0 },
};


static void
test_durations(void **state)
{
    size_t      i;
    char        yaml[256];
    cJSON      *n;
    ds_err_t    err;
    ds_spec_t   spec;

    (void) state;

    for (i = 0; i < sizeof(duration_cases) / sizeof(duration_cases[0]);
         i++)
    {
        snprintf(yaml, sizeof(yaml), "type: service\ncommands: [x]\n"
                 "port: 8000\nstop_duration: %s\n", duration_cases[i].value);
        print_message("stop_duration: %s\n", duration_cases[i].value);

        if (duration_cases[i].secs == 0) {
            assert_int_equal(ds_spec_parse_yaml("t", yaml, strlen(yaml), &n,
                                                &err), DS_EINVAL);
            assert_non_null(strstr(err.msg, "t:4:16: "));
            continue;
        }

        spec_of(yaml, &spec);
        assert_int_equal(spec.stop_duration, duration_cases[i].secs == 1
                                             ? 0 : duration_cases[i].secs);
        ds_spec_free(&spec);
    }

    /* true means the default */
    spec_of("type: service\ncommands: [x]\nport: 8000\nstop_duration: true\n"
            "max_duration: 8h\n", &spec);
    assert_int_equal(spec.stop_duration, 300);
    assert_int_equal(spec.max_duration, 8 * 3600);
    ds_spec_free(&spec);

    spec_of("type: service\ncommands: [x]\nport: 8000\nreplicas: 1..2\n"
            "scaling: {metric: rps, target: 1, window: 30s, "
            "scale_up_delay: 0, scale_down_delay: 2m}\n"
            "retry: {duration: 1d}\n", &spec);
    assert_true(spec.scaling.enabled);
    assert_int_equal(spec.scaling.window, 30);
    assert_int_equal(spec.scaling.scale_up_delay, 0);
    assert_int_equal(spec.scaling.scale_down_delay, 120);
    assert_true(spec.retry.enabled);
    assert_int_equal(spec.retry.duration, 86400);
    assert_int_equal(spec.retry.on_events, DS_SPEC_RETRY_NO_CAPACITY
                     | DS_SPEC_RETRY_INTERRUPTION | DS_SPEC_RETRY_ERROR);
    ds_spec_free(&spec);
}


/* metric: ttft, our extension: p99 time to first token, seconds */
static void
test_scaling_ttft(void **state)
{
    ds_spec_t  spec;

    (void) state;

    spec_of("type: service\n"
            "port: 8000\n"
            "commands: [python app.py]\n"
            "model: llama\n"
            "replicas: 1..4\n"
            "scaling: {metric: ttft, target: 0.5, window: 30s}\n", &spec);

    assert_int_equal(spec.scaling.metric, DS_SPEC_METRIC_TTFT);
    assert_true(spec.scaling.target == 0.5);
    assert_int_equal(spec.scaling.window, 30);
    ds_spec_free(&spec);
}


/* model.budget reaches the spec; left out, every field is 0 (none) */
static void
test_model_budget(void **state)
{
    ds_spec_t  spec;

    (void) state;

    spec_of("type: service\n"
            "port: 8000\n"
            "commands: [vllm serve llama]\n"
            "model:\n"
            "  name: llama\n"
            "  format: openai\n"
            "  budget: {rpm: 60, tpm: 100000, tpd: 2000000, "
            "max_tokens: 512}\n", &spec);

    assert_int_equal(spec.model.budget.rpm, 60);
    assert_int_equal(spec.model.budget.tpm, 100000);
    assert_true(spec.model.budget.tpd == 2000000);
    assert_int_equal(spec.model.budget.max_tokens, 512);
    ds_spec_free(&spec);

    spec_of("type: service\n"
            "port: 8000\n"
            "commands: [vllm serve llama]\n"
            "model:\n"
            "  name: llama\n"
            "  format: openai\n"
            "  budget: {tpm: 1000}\n", &spec);

    assert_int_equal(spec.model.budget.rpm, 0);
    assert_int_equal(spec.model.budget.tpm, 1000);
    assert_true(spec.model.budget.tpd == 0);
    assert_int_equal(spec.model.budget.max_tokens, 0);
    ds_spec_free(&spec);

    spec_of("type: service\n"
            "port: 8000\n"
            "commands: [vllm serve llama]\n"
            "model: llama\n", &spec);

    assert_false(ds_budget_set(&spec.model.budget));
    assert_int_equal(spec.model.budget.max_tokens, 0);
    ds_spec_free(&spec);

    /* the API's JSON names the field by its path */
    json_err("{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\"],"
             "\"model\":{\"name\":\"m\",\"format\":\"openai\","
             "\"budget\":{\"rpm\":0}}}",
             "spec.model.budget.rpm: expected an integer >= 1, got 0 (no "
             "limit: leave the field out)");
    json_err("{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\"],"
             "\"model\":{\"name\":\"m\",\"format\":\"openai\","
             "\"budget\":{\"rpm\":1,\"rps\":2}}}",
             "spec.model.budget: unknown key \"rps\" (did you mean "
             "\"rpm\"?)");
}


static void
test_typed_profile(void **state)
{
    ds_spec_t  spec;

    (void) state;

    spec_of("type: service\n"
            "name: api-1\n"
            "image: nginx\n"
            "port: \"8080:80\"\n"
            "replicas: 2..6\n"
            "scaling: {metric: inflight, target: 4}\n"
            "auth: false\n"
            "https: auto\n"
            "rate_limits:\n"
            "  - {prefix: /a, rps: 0.5}\n"
            "  - {prefix: /b, key: {type: header, header: X-Api-Key}, "
            "rps: 100, burst: 7}\n"
            "probes:\n"
            "  - {type: http, url: /h, method: put, body: x, headers: "
            "[{name: A, value: b}, {name: C, value: 1}]}\n"
            "  - {type: http, url: /i, timeout: 1m, until_ready: true}\n"
            "spot_policy: spot\n"
            "max_price: 0.75\n"
            "backends: [local, remote]\n"
            "regions: [here]\n"
            "fleets: [gpu-a, gpu-b]\n"
            "retry: {on_events: [interruption]}\n"
            "gateway: gw\n"
            "strip_prefix: false\n", &spec);

    assert_string_equal(spec.name, "api-1");
    assert_int_equal(spec.port, 80);
    assert_int_equal(spec.local_port, 8080);
    assert_int_equal(spec.replicas.min, 2);
    assert_int_equal(spec.replicas.max, 6);
    assert_int_equal(spec.scaling.metric, DS_SPEC_METRIC_INFLIGHT);
    assert_true(spec.scaling.target == 4);
    assert_int_equal(spec.scaling.window, 60);
    assert_int_equal(spec.scaling.scale_up_delay, 300);
    assert_int_equal(spec.scaling.scale_down_delay, 600);
    assert_false(spec.auth);
    assert_int_equal(spec.https, DS_SPEC_HTTPS_AUTO);

    assert_int_equal(spec.n_rate_limits, 2);
    assert_string_equal(spec.rate_limits[0].prefix, "/a");
    assert_int_equal(spec.rate_limits[0].key_type, DS_RL_KEY_IP);
    assert_int_equal(spec.rate_limits[0].rps_milli, 500);
    assert_int_equal(spec.rate_limits[0].burst, 0);
    assert_int_equal(spec.rate_limits[1].key_type, DS_RL_KEY_HEADER);
    assert_string_equal(spec.rate_limits[1].header, "X-Api-Key");
    assert_int_equal(spec.rate_limits[1].rps_milli, 100000);
    assert_int_equal(spec.rate_limits[1].burst, 7);

    assert_int_equal(spec.n_probes, 2);
    assert_false(spec.probes_default);
    assert_int_equal(spec.probes[0].method, DS_SPEC_METHOD_PUT);
    assert_string_equal(spec.probes[0].body, "x");
    assert_int_equal(spec.probes[0].n_headers, 2);
    assert_string_equal(spec.probes[0].headers[1].name, "C");
    assert_string_equal(spec.probes[0].headers[1].value, "1");
    assert_int_equal(spec.probes[1].method, DS_SPEC_METHOD_GET);
    assert_int_equal(spec.probes[1].n_headers, 0);
    assert_null(spec.probes[1].body);
    assert_int_equal(spec.probes[1].timeout, 60);
    assert_int_equal(spec.probes[1].interval, 15);
    assert_int_equal(spec.probes[1].ready_after, 1);
    assert_true(spec.probes[1].until_ready);

    assert_int_equal(spec.spot_policy, DS_SPEC_SPOT_SPOT);
    assert_true(spec.max_price == 0.75);
    assert_int_equal(spec.n_backends, 2);
    assert_string_equal(spec.backends[1], "ssh");
    assert_int_equal(spec.n_regions, 1);
    assert_int_equal(spec.n_fleets, 2);
    assert_string_equal(spec.fleets[1], "gpu-b");
    assert_int_equal(spec.retry.on_events, DS_SPEC_RETRY_INTERRUPTION);
    assert_int_equal(spec.retry.duration, 3600);
    assert_int_equal(spec.gateway, DS_SPEC_GATEWAY_NAMED);
    assert_string_equal(spec.gateway_name, "gw");
    assert_false(spec.strip_prefix);

    ds_spec_free(&spec);
}


static void
test_typed_container(void **state)
{
    ds_spec_t  spec;

    (void) state;

    spec_of("type: service\n"
            "image: ghcr.io/me/app:1\n"
            "port: 8000\n"
            "user: app:1000\n"
            "privileged: true\n"
            "registry_auth: {username: me, password: \"s3cret\"}\n"
            "volumes:\n"
            "  - /mnt/a/:/a\n"
            "  - cache:/b:ro\n"
            "  - {instance_path: /mnt/c, path: /c, optional: true, "
            "read_only: true}\n"
            "  - {name: vol.1, path: /d}\n"
            "files:\n"
            "  - app.yaml\n"
            "  - {local_path: /etc/x.conf, path: /etc//x.conf}\n", &spec);

    assert_string_equal(spec.user, "app:1000");
    assert_true(spec.privileged);
    assert_string_equal(spec.registry_auth.username, "me");
    assert_string_equal(spec.registry_auth.password, "s3cret");

    assert_int_equal(spec.n_volumes, 4);
    assert_int_equal(spec.volumes[0].kind, DS_SPEC_VOLUME_INSTANCE);
    assert_string_equal(spec.volumes[0].host_path, "/mnt/a");
    assert_null(spec.volumes[0].name);
    assert_string_equal(spec.volumes[0].path, "/a");
    assert_false(spec.volumes[0].read_only);
    assert_false(spec.volumes[0].optional);
    assert_int_equal(spec.volumes[1].kind, DS_SPEC_VOLUME_NAMED);
    assert_string_equal(spec.volumes[1].name, "cache");
    assert_null(spec.volumes[1].host_path);
    assert_true(spec.volumes[1].read_only);
    assert_int_equal(spec.volumes[2].kind, DS_SPEC_VOLUME_INSTANCE);
    assert_true(spec.volumes[2].read_only);
    assert_true(spec.volumes[2].optional);
    assert_int_equal(spec.volumes[3].kind, DS_SPEC_VOLUME_NAMED);
    assert_string_equal(spec.volumes[3].name, "vol.1");
    assert_string_equal(spec.volumes[3].path, "/d");

    assert_int_equal(spec.n_files, 2);
    assert_string_equal(spec.files[0].local, "app.yaml");
    assert_null(spec.files[0].path);
    assert_string_equal(spec.files[1].local, "/etc/x.conf");
    assert_string_equal(spec.files[1].path, "/etc/x.conf");

    ds_spec_free(&spec);

    /* the defaults */
    spec_of("type: service\nport: 8000\ncommands: [x]\ndocker: false\n",
            &spec);
    assert_false(spec.privileged);
    assert_null(spec.registry_auth.username);
    assert_null(spec.registry_auth.password);
    assert_int_equal(spec.n_volumes, 0);
    assert_non_null(spec.volumes);
    assert_int_equal(spec.n_files, 0);
    ds_spec_free(&spec);

    /* without an image, a relative working_dir is dstack's old form */
    spec_of("type: service\nport: 8000\ncommands: [x]\n"
            "working_dir: src\nvolumes: [/a:/a]\n", &spec);
    assert_string_equal(spec.working_dir, "src");
    ds_spec_free(&spec);

    /* no message quotes the password */
    parse_err("type: service\nport: 8000\nimage: x\n"
              "registry_auth: {username: me, password: [s3cret]}\n",
              "t.dstack.yml:4:41: registry_auth.password: "
              "expected a string, got a list");
}


/* ---- the daemon's side --------------------------------------------------- */

static void
test_json_paths(void **state)
{
    (void) state;

    json_err("[]", "spec: expected a mapping (a service configuration), "
             "got a list");
    json_err("{\"port\":8000}", "spec: missing required field \"type\" "
             "(expected \"type: service\")");
    json_err("{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\"],"
             "\"resources\":{\"gpus\":1}}",
             "spec.resources: unknown key \"gpus\" (did you mean \"gpu\"?)");
    json_err("{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\"],"
             "\"gpu\":1}",
             "spec: \"gpu\" belongs under \"resources\"");
    json_err("{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\"],"
             "\"resources\":{\"gpu\":\"A100:8XB..\"}}",
             "spec.resources.gpu: invalid GPU memory \"8XB..\": expected a "
             "size with MB, GB or TB (e.g. 8GB) or a range (e.g. "
             "24GB..80GB)");
    json_err("{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\"],"
             "\"probes\":[{\"type\":\"http\"},{\"type\":\"http\","
             "\"url\":\"x\"}]}",
             "spec.probes[1].url: invalid url \"x\": must start with \"/\"");
    json_err("{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\"],"
             "\"env\":{\"A\":\"1\",\"A\":\"2\"}}",
             "spec.env: duplicate key \"A\"");
    json_err("{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\"],"
             "\"env\":{\"A\":{}}}",
             "spec.env.A: expected a string, got a mapping");
    json_err("{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\"],"
             "\"port\":1}",
             "spec: duplicate key \"port\"");
    json_err("{\"type\":\"service\",\"port\":{\"container_port\":0},"
             "\"commands\":[\"x\"]}",
             "spec.port.container_port: expected an integer from 1 to 65535, "
             "got 0");
    json_err("{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\", 1, "
             "[]]}",
             "spec.commands[2]: expected a command string, got a list");
    json_err("{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\"],"
             "\"rate_limits\":[{\"rps\":1,\"key\":{\"type\":\"cookie\"}}]}",
             "spec.rate_limits[0].key.type: invalid key type \"cookie\": "
             "expected ip_address or header");
    json_err("{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\"],"
             "\"fleets\":[\"ok-fleet\",\"Bad\"]}",
             "spec.fleets[1]: invalid fleet name \"Bad\": expected 2 to 41 "
             "lowercase letters, digits or \"-\", starting with a letter");
    json_err("{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\"],"
             "\"backends\":[\"ssh\",\"remote\"]}",
             "spec.backends[1]: duplicate backend \"remote\"");
}


#define JSON_HEAD  "{\"type\":\"service\",\"port\":8000,\"image\":\"x\","

static void
test_json_container(void **state)
{
    (void) state;

    json_err(JSON_HEAD "\"privileged\":1}",
             "spec.privileged: expected true or false, got a number");
    json_err(JSON_HEAD "\"docker\":true}",
             "spec.docker: \"docker: true\" (Docker in Docker) is not "
             "supported: use \"image\" with \"privileged: true\"");
    json_err(JSON_HEAD "\"user\":\"a:b:c\"}",
             "spec.user: invalid user \"a:b:c\": expected USER or "
             "USER:GROUP, each a name or a numeric id of letters, digits, "
             "\"_\", \"-\" or \".\"");
    json_err(JSON_HEAD "\"working_dir\":\"app\"}",
             "spec: invalid working_dir \"app\": must be an absolute path "
             "with \"image\"");

    json_err(JSON_HEAD "\"registry_auth\":{\"username\":\"u\"}}",
             "spec.registry_auth: missing required field \"password\"");
    json_err(JSON_HEAD "\"registry_auth\":{\"username\":\"u\","
             "\"password\":\"p\",\"token\":\"t\"}}",
             "spec.registry_auth: unknown key \"token\"");
    json_err(JSON_HEAD "\"registry_auth\":{\"username\":\"u\","
             "\"password\":7}}",
             "spec.registry_auth.password: expected a string, got a number "
             "(quote it)");
    json_err(JSON_HEAD "\"registry_auth\":{\"username\":\"\","
             "\"password\":\"p\"}}",
             "spec.registry_auth.username: expected a non-empty string");
    json_err(JSON_HEAD "\"registry_auth\":[]}",
             "spec.registry_auth: expected a mapping {username, password}, "
             "got a list");

    json_err(JSON_HEAD "\"volumes\":{}}",
             "spec.volumes: expected a list of volumes, got a mapping");
    json_err(JSON_HEAD "\"volumes\":[{\"instance_path\":\"/a\","
             "\"path\":\"/b\"},{\"instance_path\":\"/c\",\"path\":\"b\"}]}",
             "spec.volumes[1].path: invalid volume path \"b\": must be "
             "absolute");
    json_err(JSON_HEAD "\"volumes\":[{\"instance_path\":\"/a\","
             "\"path\":\"/b\"},{\"name\":\"v\",\"path\":\"/b/\"}]}",
             "spec.volumes[1].path: duplicate volume path \"/b\": another "
             "volume is mounted there");
    json_err(JSON_HEAD "\"volumes\":[\"/a:/b\",\"v:/b\"]}",
             "spec.volumes[1]: duplicate volume path \"/b\": another volume "
             "is mounted there");
    json_err(JSON_HEAD "\"volumes\":[{\"instance_path\":\"a\","
             "\"path\":\"/b\"}]}",
             "spec.volumes[0].instance_path: invalid instance path \"a\": "
             "must be absolute");
    json_err(JSON_HEAD "\"volumes\":[{\"instance_path\":\"/a/../..\","
             "\"path\":\"/b\"}]}",
             "spec.volumes[0].instance_path: invalid instance path "
             "\"/a/../..\": must not contain \"..\"");
    json_err(JSON_HEAD "\"volumes\":[{\"name\":\"Vol\",\"path\":\"/b\"}]}",
             "spec.volumes[0].name: invalid volume name \"Vol\": expected 1 "
             "to 63 lowercase letters, digits, \"_\", \".\" or \"-\", "
             "starting with a letter or digit");
    json_err(JSON_HEAD "\"volumes\":[{\"path\":\"/b\"}]}",
             "spec.volumes[0]: missing \"instance_path\" (an instance "
             "volume) or \"name\" (a network volume)");
    json_err(JSON_HEAD "\"volumes\":[{\"name\":\"v\",\"path\":\"/b\","
             "\"kind\":\"named\"}]}",
             "spec.volumes[0]: unknown key \"kind\"");
    json_err(JSON_HEAD "\"volumes\":[{\"name\":\"v\",\"path\":\"/b\","
             "\"read_only\":\"yes\"}]}",
             "spec.volumes[0].read_only: expected true or false, got a "
             "string");
    json_err(JSON_HEAD "\"volumes\":[{\"name\":\"v\",\"path\":\"/b\","
             "\"optional\":true}]}",
             "spec.volumes[0]: \"optional\" is only for instance volumes");
    json_err(JSON_HEAD "\"volumes\":[\"/a:/b\", null]}",
             "spec.volumes[1]: expected \"/host/path:/container/path[:ro]\", "
             "\"NAME:/container/path[:ro]\" or a mapping, got null");

    json_err(JSON_HEAD "\"files\":[{\"local_path\":\"a\","
             "\"path\":\"/x/../y\"}]}",
             "spec.files[0].path: invalid file path \"/x/../y\": must not "
             "contain \"..\"");
    json_err(JSON_HEAD "\"files\":[{\"local_path\":\"a\",\"path\":null},"
             "{\"local_path\":\"\",\"path\":null}]}",
             "spec.files[1].local_path: expected a non-empty string");
    json_err(JSON_HEAD "\"files\":[{\"local_path\":\"a\",\"path\":\"b\"}]}",
             "spec.files[0].path: invalid file path \"b\": must be absolute");
    json_err(JSON_HEAD "\"files\":[{\"local_path\":\"a\x01\"}]}",
             "spec.files[0].local_path: invalid local path \"a\\x01\": must "
             "not contain control characters");
    json_err(JSON_HEAD "\"files\":[[]]}",
             "spec.files[0]: expected \"LOCAL[:CONTAINER]\" (e.g. "
             "\"data:/data\") or a mapping {local_path, path}, got a list");
}


static void
test_json_idempotent(void **state)
{
    int        rc;
    cJSON     *in, *out;
    ds_err_t   err;

    (void) state;

    /* a minimal spec from another client: bare sizes are MB on the wire */
    in = cJSON_Parse("{\"type\":\"service\",\"port\":\"8000\","
                     "\"image\":\"nginx\",\"env\":[\"A=1\",\"B\"],"
                     "\"resources\":{\"memory\":{\"min\":512},"
                     "\"gpu\":\"H100\"},\"replicas\":\"0..2\","
                     "\"scaling\":{\"metric\":\"rps\",\"target\":1},"
                     "\"python\":null,\"max_duration\":\"2h\"}");
    assert_non_null(in);

    rc = ds_spec_validate_json(in, &out, &err);
    assert_int_equal(rc, DS_OK);
    assert_idempotent(out);

    assert_int_equal(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(out, "resources"), "memory"),
        "min")->valuedouble, 512);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(out, "env"), "B")));

    cJSON_Delete(in);
    cJSON_Delete(out);

    rc = ds_spec_validate_json(NULL, &out, &err);
    assert_int_equal(rc, DS_EINVAL);
    assert_string_equal(err.msg, "spec: expected a mapping (a service "
                        "configuration), got null");
}


/* ---- env ----------------------------------------------------------------- */

static char *
fake_getenv(const char *name)
{
    if (strcmp(name, "HF_TOKEN") == 0) {
        return "hf_secret";
    }
    if (strcmp(name, "FROM_CLI") == 0) {
        return "cli value";
    }
    return NULL;
}


static void
test_resolve_env(void **state)
{
    cJSON             *n, *env, *again;
    ds_err_t           err;
    static const char *const  ov[] = { "MODEL=override", "NEW=1=2",
                                       "FROM_CLI", NULL };
    static const char *const  bad[] = { "1X=y", NULL };
    static const char *const  unset[] = { "NOPE", NULL };
    static const char *const  fix[] = { "MISSING=now", NULL };

    (void) state;

    n = parse_ok("type: service\ncommands: [x]\nport: 8000\n"
                 "env:\n  - HF_TOKEN\n  - MODEL=base\n  - KEEP=k\n");
    env = cJSON_GetObjectItemCaseSensitive(n, "env");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(env,
                                                              "HF_TOKEN")));

    assert_int_equal(ds_spec_resolve_env(n, ov, fake_getenv, &err), DS_OK);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(env, "HF_TOKEN")
                            ->valuestring, "hf_secret");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(env, "MODEL")
                            ->valuestring, "override");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(env, "KEEP")
                            ->valuestring, "k");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(env, "NEW")
                            ->valuestring, "1=2");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(env, "FROM_CLI")
                            ->valuestring, "cli value");

    /* the order of the file is kept, overrides added at the end */
    assert_string_equal(env->child->string, "HF_TOKEN");
    assert_string_equal(env->child->next->string, "MODEL");
    assert_int_equal(cJSON_GetArraySize(env), 5);

    assert_int_equal(ds_spec_validate_json(n, &again, &err), DS_OK);
    cJSON_Delete(again);
    cJSON_Delete(n);

    /* a bare name nobody sets */
    n = parse_ok("type: service\ncommands: [x]\nport: 8000\n"
                 "env: {MISSING: }\n");
    assert_int_equal(ds_spec_resolve_env(n, NULL, fake_getenv, &err),
                     DS_EINVAL);
    assert_string_equal(err.msg, "environment variable \"MISSING\" is not "
                        "set");

    assert_int_equal(ds_spec_resolve_env(n, bad, fake_getenv, &err),
                     DS_EINVAL);
    assert_string_equal(err.msg, "invalid environment variable \"1X=y\": "
                        "expected NAME=VALUE or NAME");

    assert_int_equal(ds_spec_resolve_env(n, unset, fake_getenv, &err),
                     DS_EINVAL);
    assert_string_equal(err.msg, "environment variable \"NOPE\" is not set");

    /* -e MISSING=... satisfies it */
    assert_int_equal(ds_spec_resolve_env(n, fix, fake_getenv, &err), DS_OK);
    cJSON_Delete(n);
}


/* ---- limits and odd input ------------------------------------------------ */

static void
test_limits(void **state)
{
    int        rc;
    char      *big;
    size_t     i, n;
    cJSON     *out;
    ds_err_t   err;

    (void) state;

    n = DS_SPEC_INPUT_MAX + 1;
    big = malloc(n);
    assert_non_null(big);
    memset(big, '#', n);

    rc = ds_spec_parse_yaml("big.dstack.yml", big, n, &out, &err);
    assert_int_equal(rc, DS_EINVAL);
    assert_string_equal(err.msg, "big.dstack.yml:1:1: file too large: "
                        "1048577 bytes (the limit is 1 MiB)");
    free(big);

    /* a billion laughs stops at the node budget */
    parse_err("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
              "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
              "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
              "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
              "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
              "t.dstack.yml:5:24: too many values (more than 65536)");

    /* an env list over the limit */
    n = 64 + DS_SPEC_ENV_MAX * 8;
    big = malloc(n);
    assert_non_null(big);
    strcpy(big, "type: service\ncommands: [x]\nport: 8000\nenv:\n");
    for (i = 0; i <= DS_SPEC_ENV_MAX; i++) {
        sprintf(big + strlen(big), "- V%zu\n", i);
    }
    rc = ds_spec_parse_yaml("t", big, strlen(big), &out, &err);
    assert_int_equal(rc, DS_EINVAL);
    assert_string_equal(err.msg, "t:5:1: env: too many environment variables "
                        "(more than 1024)");
    free(big);

    /* not NUL-terminated: only len bytes count */
    rc = ds_spec_parse_yaml("t", "type: service\nport: 8000\nimage: x\n"
                            "garbage: [", 34, &out, &err);
    assert_int_equal(rc, DS_OK);
    cJSON_Delete(out);

    parse_err("type: service\nport: 8000\nimage: x\nname: !!str 12\n",
              "t.dstack.yml:4:7: name: "
              "invalid run name \"12\": expected 2 to 41 "
              "lowercase letters, digits or \"-\", starting with a letter");
    parse_err("type: service\nport: 8000\nimage: x\n[a]: 1\n",
              "t.dstack.yml:4:1: mapping keys must be strings, got a list");
    parse_err("type: service\nport: 8000\nimage: x\nreplicas: [1]\n",
              "t.dstack.yml:4:11: replicas: "
              "replica groups are not supported yet");
    parse_err("type: service\nport: 8000\nimage: x\nname: ab\nname: cd\n",
              "t.dstack.yml:5:1: duplicate key \"name\" (first at line 4)");
}


/* ---- out of memory ------------------------------------------------------- */

static long  oom_count, oom_at;


static void *
oom_malloc(size_t n)
{
    if (++oom_count == oom_at) {
        return NULL;
    }
    return malloc(n);
}


/* fails the n-th cJSON allocation, for each n, until a run needs fewer */
static void
oom_case(const char *name)
{
    int            rc, yaml, done;
    char          *text, path[512];
    size_t         len;
    cJSON         *out, *in;
    ds_err_t       err;
    ds_spec_t      spec;
    cJSON_Hooks    hooks = { oom_malloc, free };

    snprintf(path, sizeof(path), "%s/good/%s.dstack.yml", spec_dir, name);
    text = read_file(path, &len);
    assert_non_null(text);

    assert_int_equal(ds_spec_parse_yaml("t", text, len, &in, &err), DS_OK);

    cJSON_InitHooks(&hooks);

    for (yaml = 1; yaml >= 0; yaml--) {
        done = 0;
        for (oom_at = 1; !done; oom_at++) {
            oom_count = 0;
            out = NULL;

            if (yaml) {
                rc = ds_spec_parse_yaml("t", text, len, &out, &err);
            } else {
                rc = ds_spec_validate_json(in, &out, &err);
            }

            if (rc == DS_OK) {
                assert_true(oom_count < oom_at);
                done = 1;
            } else {
                assert_int_equal(rc, DS_ERROR);
                assert_null(out);
                assert_non_null(strstr(err.msg, "out of memory"));
            }
            cJSON_Delete(out);
        }
        print_message("%s, %s: %ld allocations failed in turn\n", name,
                      yaml ? "yaml" : "json", oom_at - 2);
    }

    done = 0;
    for (oom_at = 1; !done; oom_at++) {
        oom_count = 0;
        rc = ds_spec_from_json(in, &spec, &err);
        if (rc == DS_OK) {
            assert_true(oom_count < oom_at);
            done = 1;
        } else {
            assert_int_equal(rc, DS_ERROR);
        }
        ds_spec_free(&spec);
    }

    cJSON_InitHooks(NULL);
    cJSON_Delete(in);
    free(text);
}


static void
test_out_of_memory(void **state)
{
    int              i, n;
    char             path[512];
    struct dirent  **names;

    (void) state;

    snprintf(path, sizeof(path), "%s/good", spec_dir);
    n = scandir(path, &names, is_case, alphasort);
    assert_true(n > 0);

    for (i = 0; i < n; i++) {
        names[i]->d_name[strlen(names[i]->d_name) - 11] = '\0';
        oom_case(names[i]->d_name);
        free(names[i]);
    }
    free(names);
}


int
main(int argc, char **argv)
{
    const char  *dir;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_cases),
        cmocka_unit_test(test_good_cases),
        cmocka_unit_test(test_seed),
        cmocka_unit_test(test_model_shorthand),
        cmocka_unit_test(test_gpu_syntax),
        cmocka_unit_test(test_cpu_memory_disk),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_typed_profile),
        cmocka_unit_test(test_scaling_ttft),
        cmocka_unit_test(test_model_budget),
        cmocka_unit_test(test_typed_container),
        cmocka_unit_test(test_json_paths),
        cmocka_unit_test(test_json_container),
        cmocka_unit_test(test_json_idempotent),
        cmocka_unit_test(test_resolve_env),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_out_of_memory),
    };

    dir = argc > 1 ? argv[1] : getenv("T_SPEC_DIR");
    if (dir) {
        spec_dir = dir;
    }

    return cmocka_run_group_tests(tests, NULL, NULL);
}
