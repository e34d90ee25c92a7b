/* replay.c: runs a harness's LLVMFuzzerTestOneInput over files and folders
 * named on the command line (a corpus, recorded crashes).  Prints one line
 * per folder and "N passed, N failed"; a crash or sanitizer report ends the
 * process, which the calling script counts as a failure. */
#include "fuzz.h"

#include <dirent.h>
#include <sys/stat.h>

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, bad = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) continue; /* no recorded crashes yet */
        if (!S_ISDIR(sb.st_mode)) {
            bad += run_file(argv[i]) != 0;
            files++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        int here = 0;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", argv[i], e->d_name);
            bad += run_file(p) != 0;
            here++;
        }
        if (d) closedir(d);
        printf("%s: %d inputs\n", argv[i], here);
        files += here;
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf /tmp/trustmoe-fuzz-%d", (int)getpid());
    if (system(cmd) != 0) bad++;
    printf("%d passed, %d failed\n", files - bad, bad);
    return bad || files == 0;
}
