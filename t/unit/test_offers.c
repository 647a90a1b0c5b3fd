/*
 * Unit tests of offer matching (controld/offers.c): specs from YAML, as
 * the CLI sends them, against hosts described by hand.  The messages
 * are the API's 422 answers, so they are compared whole.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ds_spec.h"
#include "offers.h"


/* 32 CPUs, 256GB, 2TB, and two H100s as nvidia-smi names them */
static struct host_desc  h100_host = {
    .backend = "local",
    .region = "local",
    .instance_type = "host",
    .cpus = 32,
    .arch = DS_SPEC_ARCH_X86,
    .machine = "x86_64",
    .memory_mb = 256 * 1024,
    .disk_mb = 2 * 1024 * 1024,
    .disk_path = "/var/lib/dstack/replicas",
    .gpus = {
        { 0, DS_SPEC_VENDOR_NVIDIA, "NVIDIA H100 80GB HBM3", "H100", 81559 },
        { 1, DS_SPEC_VENDOR_NVIDIA, "NVIDIA H100 80GB HBM3", "H100", 81559 },
    },
    .n_gpus = 2,
};

static struct host_desc  amd_host = {
    .backend = "local",
    .region = "local",
    .instance_type = "host",
    .cpus = 64,
    .arch = DS_SPEC_ARCH_X86,
    .machine = "x86_64",
    .memory_mb = 1024 * 1024,
    .disk_mb = 2 * 1024 * 1024,
    .disk_path = "/var/lib/dstack/replicas",
    .gpus = {
        { 0, DS_SPEC_VENDOR_AMD, "AMD Instinct MI300X", "MI300X", 196592 },
        { 1, DS_SPEC_VENDOR_AMD, "AMD Instinct MI300X", "MI300X", 196592 },
    },
    .n_gpus = 2,
};

static struct host_desc  cpu_host = {
    .backend = "local",
    .region = "local",
    .instance_type = "host",
    .cpus = 4,
    .arch = DS_SPEC_ARCH_X86,
    .machine = "x86_64",
    .memory_mb = 16 * 1024,
    .disk_mb = 500 * 1024,
    .disk_path = "/srv/replicas",
    .n_gpus = 0,
    .gpu_note = "nvidia-smi not found",
};


/* a service spec with these resources ("" for none) */
static void
spec_with(const char *resources, ds_spec_t *sp)
{
    char       yaml[512];
    cJSON     *n;
    ds_err_t   err;

    snprintf(yaml, sizeof(yaml), "type: service\ncommands: [x]\n"
             "port: 8000\n%s%s", resources[0] ? "resources:\n" : "",
             resources);
    err.msg[0] = '\0';
    if (ds_spec_parse_yaml("t.dstack.yml", yaml, strlen(yaml), &n, &err)
        != DS_OK)
    {
        print_error("parse: %s\n", err.msg);
        fail();
    }
    if (ds_spec_from_json(n, sp, &err) != DS_OK) {
        print_error("from_json: %s\n", err.msg);
        fail();
    }
    cJSON_Delete(n);
}


/* the offer for a spec on host h, which must match */
static cJSON *
offer(const struct host_desc *h, const char *resources, int replicas)
{
    ds_spec_t  sp;
    cJSON     *offers, *o;
    char       err[512];
    int        rc;

    spec_with(resources, &sp);
    offers = cJSON_CreateArray();
    err[0] = '\0';
    rc = offers_match(h, &sp, replicas, offers, err, sizeof(err));
    if (rc != 0) {
        print_error("%s: %s\n", resources, err);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(cJSON_GetArraySize(offers), 1);
    o = cJSON_DetachItemFromArray(offers, 0);
    cJSON_Delete(offers);
    ds_spec_free(&sp);
    return o;
}


/* a spec on host h that must not match, with exactly that message */
static void
no_offer(const struct host_desc *h, const char *resources, int replicas,
    const char *expected)
{
    ds_spec_t  sp;
    cJSON     *offers;
    char       err[512];

    spec_with(resources, &sp);
    offers = cJSON_CreateArray();
    err[0] = '\0';
    assert_int_equal(offers_match(h, &sp, replicas, offers, err,
                                  sizeof(err)), 422);
    assert_int_equal(cJSON_GetArraySize(offers), 0);
    assert_string_equal(err, expected);
    cJSON_Delete(offers);
    ds_spec_free(&sp);
}


static double
num(const cJSON *o, const char *path)
{
    const cJSON  *v = o;
    char          buf[64], *tok, *save;

    snprintf(buf, sizeof(buf), "%s", path);
    for (tok = strtok_r(buf, ".", &save); tok != NULL;
         tok = strtok_r(NULL, ".", &save))
    {
        v = cJSON_GetObjectItemCaseSensitive(v, tok);
        assert_non_null(v);
    }
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}


static void
test_gpu_by_name(void **state)
{
    cJSON         *o, *gpus, *g;

    (void) state;

    o = offer(&h100_host, "  gpu: H100:2\n", 1);
    assert_string_equal(cJSON_GetStringValue(
                            cJSON_GetObjectItem(o, "backend")), "local");
    assert_string_equal(cJSON_GetStringValue(
                            cJSON_GetObjectItem(o, "instance_type")), "host");
    gpus = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "resources"), "gpus");
    assert_int_equal(cJSON_GetArraySize(gpus), 2);
    g = cJSON_GetArrayItem(gpus, 0);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(g, "name")),
                        "H100");
    assert_string_equal(cJSON_GetStringValue(
                            cJSON_GetObjectItem(g, "vendor")), "nvidia");
    assert_true(num(g, "memory_mb") == 81559);
    assert_true(num(o, "gpus_free") == 2);
    cJSON_Delete(o);

    /* case and vendor do not matter; a word of the full name does */
    cJSON_Delete(offer(&h100_host, "  gpu: nvidia:h100\n", 1));
    cJSON_Delete(offer(&h100_host, "  gpu: HBM3:1\n", 1));

    no_offer(&h100_host, "  gpu: A100\n", 1,
             "spec.resources.gpu: no GPU of the host matches A100:1..; "
             "the host has H100:80GB:2");
    no_offer(&h100_host, "  gpu: amd:MI300X:1\n", 1,
             "spec.resources.gpu: no GPU of the host matches "
             "amd:MI300X:1; the host has H100:80GB:2");
    no_offer(&cpu_host, "  gpu: 1\n", 1,
             "spec.resources.gpu: no GPU of the host matches 1; the host "
             "has no GPU (nvidia-smi not found)");
}


/* vendor amd matches AMD's GPUs only; texts in dstack's form */
static void
test_gpu_amd(void **state)
{
    (void) state;

    cJSON_Delete(offer(&amd_host, "  gpu: amd:2\n", 1));
    cJSON_Delete(offer(&amd_host, "  gpu: MI300X:192GB:2\n", 1));
    cJSON_Delete(offer(&amd_host, "  gpu: 1\n", 2));
    no_offer(&amd_host, "  gpu: nvidia:1\n", 1,
             "spec.resources.gpu: no GPU of the host matches nvidia:1; "
             "the host has MI300X:192GB:2");
    no_offer(&h100_host, "  gpu: amd\n", 1,
             "spec.resources.gpu: no GPU of the host matches amd:1..; "
             "the host has H100:80GB:2");
    no_offer(&amd_host, "  gpu: MI300X:8\n", 1,
             "spec.resources.gpu: 1 replica x 8 GPUs need 8, the host has "
             "2 that match (MI300X:192GB:2)");
}


static void
test_gpu_memory(void **state)
{
    (void) state;

    /* nvidia-smi's 81559 MiB is an "80GB" card */
    cJSON_Delete(offer(&h100_host, "  gpu: 80GB\n", 1));
    cJSON_Delete(offer(&h100_host, "  gpu: 24GB..\n", 1));
    cJSON_Delete(offer(&h100_host, "  gpu: 40GB..100GB:2\n", 1));
    no_offer(&h100_host, "  gpu: ..48GB\n", 1,
             "spec.resources.gpu: no GPU of the host matches ..48GB:1..; "
             "the host has H100:80GB:2");
    no_offer(&h100_host, "  gpu: H100:141GB\n", 1,
             "spec.resources.gpu: no GPU of the host matches "
             "H100:141GB:1..; the host has H100:80GB:2");

    assert_true(gpu_mem_ok(&(ds_spec_range_t) { 80 * 1024, 80 * 1024 },
                           81559));
    assert_false(gpu_mem_ok(&(ds_spec_range_t) { 94 * 1024,
                                                 DS_SPEC_UNLIMITED }, 81559));
    assert_false(gpu_mem_ok(&(ds_spec_range_t) { 0, 40 * 1024 }, 81559));
}


static void
test_gpu_count(void **state)
{
    cJSON  *o;

    (void) state;

    /* one replica takes the least the range allows */
    o = offer(&h100_host, "  gpu: H100:1..2\n", 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(
        cJSON_GetObjectItem(o, "resources"), "gpus")), 1);
    cJSON_Delete(o);

    cJSON_Delete(offer(&h100_host, "  gpu: H100:1\n", 2));
    no_offer(&h100_host, "  gpu: H100:4\n", 1,
             "spec.resources.gpu: 1 replica x 4 GPUs need 4, the host has 2 "
             "that match (H100:80GB:2)");
    no_offer(&h100_host, "  gpu: H100:1\n", 3,
             "spec.resources.gpu: 3 replicas x 1 GPU need 3, the host has 2 "
             "that match (H100:80GB:2)");
    no_offer(&h100_host, "  gpu:\n    name: H100\n    count: 2\n"
             "    total_memory: 200GB..\n", 1,
             "spec.resources.gpu.total_memory: needs 200GB.. in 2 GPUs, 2 "
             "of the host's H100 give 159GB");
}


static void
test_count_defaults(void **state)
{
    ds_spec_t  sp;
    cJSON     *o;

    (void) state;

    /* no gpu: none taken, and a host without GPUs offers */
    spec_with("", &sp);
    assert_int_equal(gpus_per_replica(&sp), 0);
    ds_spec_free(&sp);
    o = offer(&cpu_host, "", 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(
        cJSON_GetObjectItem(o, "resources"), "gpus")), 0);
    cJSON_Delete(o);

    /* a name or a memory alone asks for one */
    spec_with("  gpu: A100\n", &sp);
    assert_int_equal(gpus_per_replica(&sp), 1);
    ds_spec_free(&sp);
    spec_with("  gpu: 24GB..\n", &sp);
    assert_int_equal(gpus_per_replica(&sp), 1);
    ds_spec_free(&sp);
    spec_with("  gpu: 0\n", &sp);
    assert_int_equal(gpus_per_replica(&sp), 0);
    ds_spec_free(&sp);
    spec_with("  gpu: 2..8\n", &sp);
    assert_int_equal(gpus_per_replica(&sp), 2);
    ds_spec_free(&sp);
}


static void
test_cpu_memory_disk(void **state)
{
    cJSON  *o;

    (void) state;

    /* the offer has the most the ranges allow */
    o = offer(&h100_host, "  cpu: 4..8\n  memory: 16GB..\n  disk: 100GB\n",
              1);
    assert_true(num(o, "resources.cpus") == 8);
    assert_true(num(o, "resources.memory_mb") == 256 * 1024);
    assert_true(num(o, "resources.disk_mb") == 100 * 1024);
    cJSON_Delete(o);

    no_offer(&cpu_host, "  cpu: 8..\n", 1,
             "spec.resources.cpu: needs 8.. CPUs, the host has 4");
    no_offer(&cpu_host, "  cpu: arm:2..\n", 1,
             "spec.resources.cpu: needs arm, the host is x86_64");
    no_offer(&cpu_host, "  memory: 32GB..64GB\n", 1,
             "spec.resources.memory: needs 32GB..64GB, the host has 16.0GB");
    no_offer(&cpu_host, "  disk: 1TB..\n", 1,
             "spec.resources.disk: needs 1024GB.., the disk of "
             "/srv/replicas has 500GB");
}


static void
test_texts(void **state)
{
    char  buf[128];

    (void) state;

    assert_string_equal(offers_gpu_name(&h100_host, 1), "H100");
    assert_string_equal(offers_gpu_name(&h100_host, 7), "GPU");
    offers_host_gpus_text(&h100_host, buf, sizeof(buf));
    assert_string_equal(buf, "H100:80GB:2");
    offers_range_text(buf, sizeof(buf),
                      &(ds_spec_range_t) { 2048, 2048 }, 1024, "GB");
    assert_string_equal(buf, "2GB");
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpu_by_name),
        cmocka_unit_test(test_gpu_amd),
        cmocka_unit_test(test_gpu_memory),
        cmocka_unit_test(test_gpu_count),
        cmocka_unit_test(test_count_defaults),
        cmocka_unit_test(test_cpu_memory_disk),
        cmocka_unit_test(test_texts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
