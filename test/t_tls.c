/*
 * t_tls.c: tests of tls.c: pin parsing, PEM loading of every supported
 * key and chain form, and TLS between a client and a server over a
 * socketpair in this process: chain, name and address checks, pins,
 * --insecure, refusals with their reasons, garbage, and data both ways.
 *
 * The certificates were made once with the openssl CLI (OpenSSL 3.0),
 * valid 2020-2120 (the expired one: 2000 only):
 *   openssl ecparam -name prime256v1 -genkey -noout -out ca.key
 *   openssl ca -selfsign -extensions v3ca (CA:TRUE) ...      ca.pem
 *   openssl genrsa -traditional 2048; openssl pkcs8 -topk8 -nocrypt
 *   openssl ca -cert ca.pem ... subjectAltName=DNS:candy.test,IP:127.0.0.1
 *   openssl ecparam -name prime256v1 -genkey (EC PARAMETERS + SEC1) ...
 *   openssl ca -selfsign (CA:FALSE) for the P-384 and P-521 ones
 * (test/it-tls.sh makes the same kinds at test time.)  Each pin is
 *   openssl x509 -pubkey -noout | openssl pkey -pubin -outform der |
 *   sha256sum   (and | openssl dgst -sha256 -binary | base64).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "candy.h"
#include "test.h"

/* the test CA: EC P-256, self-signed, CA:TRUE */
static const char ca_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBYzCCAQqgAwIBAgICEAAwCgYIKoZIzj0EAwIwGDEWMBQGA1UEAwwNY2FuZHkg\n"
    "dGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAwMDAwMFowGDEWMBQG\n"
    "A1UEAwwNY2FuZHkgdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABOz7\n"
    "QZarTFXBR7z+HwRYcBRr1ZKe/KjibxJwflS+tudZuA79ERrHVHcNLm5lDs2y4Mk4\n"
    "Oa46ujECLSkXKesFaJWjQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQD\n"
    "AgEGMB0GA1UdDgQWBBTDggOaShGsjA4lckSr0ZD5BxCD/DAKBggqhkjOPQQDAgNH\n"
    "ADBEAiAVA0K4C1c9itpz8CR7BbkN/ts45BgEXZFGfWEvpMLfzgIgQYOdvuTTFxCL\n"
    "OuDeNCycro7i7aXmu+wKkFftVuNu8uU=\n"
    "-----END CERTIFICATE-----\n";

/* RSA-2048 leaf for candy.test and 127.0.0.1, signed by the CA */
static const char rsa_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIICUzCCAfqgAwIBAgICEAEwCgYIKoZIzj0EAwIwGDEWMBQGA1UEAwwNY2FuZHkg\n"
    "dGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAwMDAwMFowFTETMBEG\n"
    "A1UEAwwKY2FuZHkudGVzdDCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEB\n"
    "ALohQ65NQNOQgJSi/zUDG7DuwvG3AN1WdDvlifnicZqiJb02HMFm3swtGuN5TlPY\n"
    "wA6x85b8+iWelsLi5NbnHATnF6FQnViUM5ckSyBy+1HIKp8Dg0remHr8JnqZ5uxT\n"
    "9Zrla/kc5H9H7OuAcyc9njoq4MMJASkOTehKSQh9FQhQeIuduFYJ2P7avki4qvm1\n"
    "jfsLPGmAI2nvyMvb3fNCJ4FNMmwomi0d19T63AXY0WkgHzqGAlO6C89y5GpfJWX9\n"
    "HxXtuvZapQLxSxdSPPaS7emHQIBb905yzaeffBe1+GMdQOCp7Tgl1FGvOX8f5gHC\n"
    "5EK8ls/pNC9E8g9iTcpx3iMCAwEAAaNqMGgwCQYDVR0TBAIwADAbBgNVHREEFDAS\n"
    "ggpjYW5keS50ZXN0hwR/AAABMB0GA1UdDgQWBBRg1qaUpHTUBeqlObuEntXF4Iur\n"
    "iDAfBgNVHSMEGDAWgBTDggOaShGsjA4lckSr0ZD5BxCD/DAKBggqhkjOPQQDAgNH\n"
    "ADBEAiBjXln53qOst6Go+dZzlKWdE8jG2qyEFzyNC+M9xPvAkgIgJ17MFv9FOzXo\n"
    "x6I/VUuIgXdP63FVX5rfuz6eoczxc1Y=\n"
    "-----END CERTIFICATE-----\n";

/* its key, PKCS#1 ("RSA PRIVATE KEY") */
static const char rsa_key[] =
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAuiFDrk1A05CAlKL/NQMbsO7C8bcA3VZ0O+WJ+eJxmqIlvTYc\n"
    "wWbezC0a43lOU9jADrHzlvz6JZ6WwuLk1uccBOcXoVCdWJQzlyRLIHL7UcgqnwOD\n"
    "St6Yevwmepnm7FP1muVr+Rzkf0fs64BzJz2eOirgwwkBKQ5N6EpJCH0VCFB4i524\n"
    "VgnY/tq+SLiq+bWN+ws8aYAjae/Iy9vd80IngU0ybCiaLR3X1PrcBdjRaSAfOoYC\n"
    "U7oLz3Lkal8lZf0fFe269lqlAvFLF1I89pLt6YdAgFv3TnLNp598F7X4Yx1A4Knt\n"
    "OCXUUa85fx/mAcLkQryWz+k0L0TyD2JNynHeIwIDAQABAoIBAAOJT0JiswkcqpIT\n"
    "DhCWnbI9DxTNmnrEwjztwwiC42VXOv//JQkNqHeuTF+nCzRvnqfeJ1fROFAk/7ig\n"
    "hqLd+DvQR4l9QR1mOhwJ3f2LVw1k5V5pEC0I0VKA3kWft/H53xA8LKgqgt2M4x+k\n"
    "V0vBvB20eS8WHuCwpg1JoAfvwcm1yV8CFIxTVhAFgLDN4OswbHZzNIKxiKVT8p/2\n"
    "J0S3PgcJFy3ZtdH3eN2/U6ALNUfy2LZAniPolmLnqA3g57VVqeZwpWjRfX1r0Dh2\n"
    "3hfV4zxDr4apwD0JkHtGZj+HZUYTe9P4V/nIMj2pRwBJYY47B/Y3b05c+5Rg1YEe\n"
    "Pz1/DPkCgYEA7UgUF0Mr9szDHdvxxjPlNc2uyZaywpaWP2C4oevgLYJHuw1xWLB4\n"
    "luV7VdCXnsPpUx+G5ziIunzrDyoE30AG1XS9F3J5ebQff54L7njqjWUP5z6gJZgz\n"
    "ASjxDhP23PKVEIesna5qufPZhj9AaItxxJVnnS9XqyxPUjR9ji3hmXsCgYEAyNAs\n"
    "sE6dqHys8qJR95Ia12XdgHKkq1BMSR7FOvWP8g7T8Ts9PACTz/wIt3C9e1NCGzR0\n"
    "7xG5BKvaUbtgFNMiM9C1Cd/eo38SbOCRZ85KB1OVyRjmgBmXlX84RsK/uvPsOwOH\n"
    "jNkW5X1JfD1cjvu67muhn4PucQ3W6YCNKO3RCXkCgYA5REEdECgnK2oX5cJnTJUQ\n"
    "NDDwFD/WeNOQPj6xTaVQNnYrbeYiOo0QFhh7MJm3Rp8kYaKEYX+WSpnMkh6U5vX/\n"
    "RGpyoz0wI0nK2hEVH/ez4mVBMTsjd6UvrXroI+dbkexqDeSaNcMqV/Dy1ocr9COk\n"
    "B073f7qP5GTMeUCoNOiSywKBgH3quvracNVjR/bkfU0lmhsSTq/qMwMQ2KTI3Jc5\n"
    "v0bisVcD9EOZgRXbTYPo94dLD5qLa/80N7WMJNs3COpF8Z5X8gz9CVevqFgJAGP8\n"
    "4EJz0OpF6NLOOVSObzU/jIWnyaq/bdGNlmPUCa4Ts+QcSHyTlMa3LV5KdUX5S4os\n"
    "hPTRAoGBALTk2SqQ9aEPueiPorMNtTKa6MljkW6NdnyxX1RlATwBDPOQtKIrAMye\n"
    "aRyzSHVOsFX56paKAJTqGfjItlZVjPzBJM6TGPGbAAGmTEeX7w9HhabxO8fNvA1B\n"
    "tPJ041eUrzGvZR/n5d6WPTyCmn1LCagEH66wRWMMp8xkxGgc1HNs\n"
    "-----END RSA PRIVATE KEY-----\n";

/* the same key, PKCS#8 */
static const char rsa_p8[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC6IUOuTUDTkICU\n"
    "ov81Axuw7sLxtwDdVnQ75Yn54nGaoiW9NhzBZt7MLRrjeU5T2MAOsfOW/PolnpbC\n"
    "4uTW5xwE5xehUJ1YlDOXJEsgcvtRyCqfA4NK3ph6/CZ6mebsU/Wa5Wv5HOR/R+zr\n"
    "gHMnPZ46KuDDCQEpDk3oSkkIfRUIUHiLnbhWCdj+2r5IuKr5tY37CzxpgCNp78jL\n"
    "293zQieBTTJsKJotHdfU+twF2NFpIB86hgJTugvPcuRqXyVl/R8V7br2WqUC8UsX\n"
    "Ujz2ku3ph0CAW/dOcs2nn3wXtfhjHUDgqe04JdRRrzl/H+YBwuRCvJbP6TQvRPIP\n"
    "Yk3Kcd4jAgMBAAECggEAA4lPQmKzCRyqkhMOEJadsj0PFM2aesTCPO3DCILjZVc6\n"
    "//8lCQ2od65MX6cLNG+ep94nV9E4UCT/uKCGot34O9BHiX1BHWY6HAnd/YtXDWTl\n"
    "XmkQLQjRUoDeRZ+38fnfEDwsqCqC3YzjH6RXS8G8HbR5LxYe4LCmDUmgB+/BybXJ\n"
    "XwIUjFNWEAWAsM3g6zBsdnM0grGIpVPyn/YnRLc+BwkXLdm10fd43b9ToAs1R/LY\n"
    "tkCeI+iWYueoDeDntVWp5nClaNF9fWvQOHbeF9XjPEOvhqnAPQmQe0ZmP4dlRhN7\n"
    "0/hX+cgyPalHAElhjjsH9jdvTlz7lGDVgR4/PX8M+QKBgQDtSBQXQyv2zMMd2/HG\n"
    "M+U1za7JlrLClpY/YLih6+Atgke7DXFYsHiW5XtV0Jeew+lTH4bnOIi6fOsPKgTf\n"
    "QAbVdL0Xcnl5tB9/ngvueOqNZQ/nPqAlmDMBKPEOE/bc8pUQh6ydrmq589mGP0Bo\n"
    "i3HElWedL1erLE9SNH2OLeGZewKBgQDI0CywTp2ofKzyolH3khrXZd2AcqSrUExJ\n"
    "HsU69Y/yDtPxOz08AJPP/Ai3cL17U0IbNHTvEbkEq9pRu2AU0yIz0LUJ396jfxJs\n"
    "4JFnzkoHU5XJGOaAGZeVfzhGwr+68+w7A4eM2RblfUl8PVyO+7rua6Gfg+5xDdbp\n"
    "gI0o7dEJeQKBgDlEQR0QKCcrahflwmdMlRA0MPAUP9Z405A+PrFNpVA2ditt5iI6\n"
    "jRAWGHswmbdGnyRhooRhf5ZKmcySHpTm9f9EanKjPTAjScraERUf97PiZUExOyN3\n"
    "pS+teugj51uR7GoN5Jo1wypX8PLWhyv0I6QHTvd/uo/kZMx5QKg06JLLAoGAfeq6\n"
    "+tpw1WNH9uR9TSWaGxJOr+ozAxDYpMjclzm/RuKxVwP0Q5mBFdtNg+j3h0sPmotr\n"
    "/zQ3tYwk2zcI6kXxnlfyDP0JV6+oWAkAY/zgQnPQ6kXo0s45VI5vNT+MhafJqr9t\n"
    "0Y2WY9QJrhOz5BxIfJOUxrctXkp1RflLiiyE9NECgYEAtOTZKpD1oQ+56I+isw21\n"
    "MproyWORbo12fLFfVGUBPAEM85C0oisAzJ5pHLNIdU6wVfnqlooAlOoZ+Mi2VlWM\n"
    "/MEkzpMY8ZsAAaZMR5fvD0eFpvE7x828DUG08nTjV5SvMa9lH+fl3pY9PIKafUsJ\n"
    "qAQfrrBFYwynzGTEaBzUc2w=\n"
    "-----END PRIVATE KEY-----\n";

/* EC P-256 leaf for candy.test, signed by the CA */
static const char ec_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBgzCCASmgAwIBAgICEAIwCgYIKoZIzj0EAwIwGDEWMBQGA1UEAwwNY2FuZHkg\n"
    "dGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAwMDAwMFowFTETMBEG\n"
    "A1UEAwwKY2FuZHkudGVzdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABJfDziEn\n"
    "J66NvqxUJ+yuq2lx9jnYijcvIMA035kLDGBNgp+n4iaza+tASQrHEGsadh5qqGM5\n"
    "LuUBG1UO948yMGmjZDBiMAkGA1UdEwQCMAAwFQYDVR0RBA4wDIIKY2FuZHkudGVz\n"
    "dDAdBgNVHQ4EFgQUBoD44v/DY+FWHn1awxEugguiuKkwHwYDVR0jBBgwFoAUw4ID\n"
    "mkoRrIwOJXJEq9GQ+QcQg/wwCgYIKoZIzj0EAwIDSAAwRQIhAIIH9QebM484A8TX\n"
    "rK05CSE7KgoOEx1ovQpfsha2IgEDAiB9xXbIaqwWFOBFoRnhKSX8madCWkYrpdEI\n"
    "h+kT38QaEA==\n"
    "-----END CERTIFICATE-----\n";

/* its key, SEC1 ("EC PRIVATE KEY") after an EC PARAMETERS block */
static const char ec_key[] =
    "-----BEGIN EC PARAMETERS-----\n"
    "BggqhkjOPQMBBw==\n"
    "-----END EC PARAMETERS-----\n"
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIIWjrsK4fVlDcIBL+r6S7qXAeCldQ+G78kRXDnS+7QT+oAoGCCqGSM49\n"
    "AwEHoUQDQgAEl8POIScnro2+rFQn7K6raXH2OdiKNy8gwDTfmQsMYE2Cn6fiJrNr\n"
    "60BJCscQaxp2HmqoYzku5QEbVQ73jzIwaQ==\n"
    "-----END EC PRIVATE KEY-----\n";

/* the same key, PKCS#8 */
static const char ec_p8[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghaOuwrh9WUNwgEv6\n"
    "vpLupcB4KV1D4bvyRFcOdL7tBP6hRANCAASXw84hJyeujb6sVCfsrqtpcfY52Io3\n"
    "LyDANN+ZCwxgTYKfp+Ims2vrQEkKxxBrGnYeaqhjOS7lARtVDvePMjBp\n"
    "-----END PRIVATE KEY-----\n";

/* the same key and name, valid in the year 2000 only */
static const char expired_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBgjCCASegAwIBAgICEAMwCgYIKoZIzj0EAwIwGDEWMBQGA1UEAwwNY2FuZHkg\n"
    "dGVzdCBDQTAeFw0wMDAxMDEwMDAwMDBaFw0wMTAxMDEwMDAwMDBaMBUxEzARBgNV\n"
    "BAMMCmNhbmR5LnRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASXw84hJyeu\n"
    "jb6sVCfsrqtpcfY52Io3LyDANN+ZCwxgTYKfp+Ims2vrQEkKxxBrGnYeaqhjOS7l\n"
    "ARtVDvePMjBpo2QwYjAJBgNVHRMEAjAAMBUGA1UdEQQOMAyCCmNhbmR5LnRlc3Qw\n"
    "HQYDVR0OBBYEFAaA+OL/w2PhVh59WsMRLoILoripMB8GA1UdIwQYMBaAFMOCA5pK\n"
    "EayMDiVyRKvRkPkHEIP8MAoGCCqGSM49BAMCA0kAMEYCIQCS9z931SJp4W5U6/zZ\n"
    "u0Z8kpb53HnTqPkYdB7bMJBwDwIhAOem0AQfsH63KFCMY7kH5R39un+bBP7yaqNu\n"
    "D4kPzEP6\n"
    "-----END CERTIFICATE-----\n";

/* EC P-384, self-signed, CA:FALSE, candy.test */
static const char ss384_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBnTCCASKgAwIBAgICEAQwCgYIKoZIzj0EAwIwFTETMBEGA1UEAwwKY2FuZHku\n"
    "dGVzdDAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAwMDAwMFowFTETMBEGA1UE\n"
    "AwwKY2FuZHkudGVzdDB2MBAGByqGSM49AgEGBSuBBAAiA2IABPCzmiAA5thBcmbd\n"
    "04Co+fKgttOKOxRws+yjCGaGs6wNaCdMnEgGHkkuJ/3SMpOQXhbb0+B+tuuapbBH\n"
    "S7LaoWdtphFXd+OuyKnjDp6bF9/KIvcZjdIE3B/FEa/Np3WsCKNDMEEwCQYDVR0T\n"
    "BAIwADAVBgNVHREEDjAMggpjYW5keS50ZXN0MB0GA1UdDgQWBBSPsOITWaFWdwUm\n"
    "XdjKGcl8mxqncjAKBggqhkjOPQQDAgNpADBmAjEA/NXjW37cKQMgdWZNeRy1KOLN\n"
    "3Gam7IP7S46UTJlWEpvqpPFJa9jsn3ASoRJWVgokAjEA9c2i3Yv+15c0JW/QSn4Q\n"
    "EA2yfKLkrOzczs/Lrz6Dso+gKq9IqcNKInwjK4rOEhgg\n"
    "-----END CERTIFICATE-----\n";

/* its key, SEC1 without parameters */
static const char ss384_key[] =
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MIGkAgEBBDBb9dic3nIzY+ikkRGRr1kOgrHpRMd3c8KT368sj7+IdlozpqjG0ASg\n"
    "5LIplPUxnC6gBwYFK4EEACKhZANiAATws5ogAObYQXJm3dOAqPnyoLbTijsUcLPs\n"
    "owhmhrOsDWgnTJxIBh5JLif90jKTkF4W29PgfrbrmqWwR0uy2qFnbaYRV3fjrsip\n"
    "4w6emxffyiL3GY3SBNwfxRGvzad1rAg=\n"
    "-----END EC PRIVATE KEY-----\n";

/* EC P-521, self-signed, CA:FALSE, candy.test */
static const char p521_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIB5zCCAUigAwIBAgICEAUwCgYIKoZIzj0EAwIwFTETMBEGA1UEAwwKY2FuZHku\n"
    "dGVzdDAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAwMDAwMFowFTETMBEGA1UE\n"
    "AwwKY2FuZHkudGVzdDCBmzAQBgcqhkjOPQIBBgUrgQQAIwOBhgAEAS5WO9B2na+s\n"
    "8AynEdOT/vNfzTBx2H0L5Hg2aZgBlvIdtaxsrscUiUT9lxNATtwKj3Xy35FP3eIJ\n"
    "nUsqpj0sunZmAV83KyUPpPf45EpGq+7NCPfjLUsZ4X4jdOUtWZ+GTKnt695jWnHm\n"
    "/VGyhx70BY8kFhWB4S77RbRoyLbzm/81ukz/o0MwQTAJBgNVHRMEAjAAMBUGA1Ud\n"
    "EQQOMAyCCmNhbmR5LnRlc3QwHQYDVR0OBBYEFL8DD9q23ribHtUOc9mKW5m0M7Ws\n"
    "MAoGCCqGSM49BAMCA4GMADCBiAJCAIbf9J80FwSfbM1lWUuBwGvvitukBwuUbeaZ\n"
    "tevj8a5a6eFieKQdrE9DA6fiANGuW0uQZhtHdp4kMpLVBq6tNuTsAkIBbC+Wr/Uv\n"
    "Kw4Fe9v6z6nOlb0dVQ6xYNNTdcPdCRV6MDbKZXM/HNyFs+rz4AY3xLv8t9EXfDsb\n"
    "WsL8Y3wrfRxp14I=\n"
    "-----END CERTIFICATE-----\n";

/* its key, PKCS#8 */
static const char p521_p8[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIHuAgEAMBAGByqGSM49AgEGBSuBBAAjBIHWMIHTAgEBBEIBTJC56nQcroWCveLV\n"
    "/4JMBTU/JGBf/39SHK6xYKCNTkIev226XDYFJwq89eJod1EzUToumWaD7himOAVs\n"
    "0fBwN3yhgYkDgYYABAEuVjvQdp2vrPAMpxHTk/7zX80wcdh9C+R4NmmYAZbyHbWs\n"
    "bK7HFIlE/ZcTQE7cCo918t+RT93iCZ1LKqY9LLp2ZgFfNyslD6T3+ORKRqvuzQj3\n"
    "4y1LGeF+I3TlLVmfhkyp7eveY1px5v1Rsoce9AWPJBYVgeEu+0W0aMi285v/NbpM\n"
    "/w==\n"
    "-----END PRIVATE KEY-----\n";

/* an Ed25519 key, PKCS#8 (not supported) */
static const char ed_p8[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIFwl2no27rBsCow8PlsGVR7deWVfd4LIPPY9++6HIblw\n"
    "-----END PRIVATE KEY-----\n";

/* the EC P-256 key, encrypted PKCS#8 (not supported) */
static const char enc_p8[] =
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
    "MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAgT0MHEOaa5bAICCAAw\n"
    "DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEOmTRAmWQf9JY7ErojvyAckEgZCn\n"
    "wC9ESr4v7H+/2vbEXNUSFFM3pwfvAVexyGWTqa8t70lj+PPuvAnb6fYT+9kvnkSl\n"
    "g4gnu6n851pIMk3DOkfsxXWJrysktMwE2KphalpzasZNcp7pjzvoPuRj/EJ+qTVI\n"
    "IjJLGDbJuL/NPPQMaVeI3689ECzSkPl2cOZ9cKlFWjNG0VIrjnybPTBVUN1HSN0=\n"
    "-----END ENCRYPTED PRIVATE KEY-----\n";


/* Pins of the keys above, as openssl computes them (see the top). */
#define PIN_SS384 \
    "d45ea12cb1aaf7bb144ac3923fdccad82063c245d183f748807641aeec47c448"
#define PIN_SS384_B64 "1F6hLLGq97sUSsOSP9zK2CBjwkXRg/dIgHZBruxHxEg="
#define PIN_P521 \
    "9a9f6383f4bc05152b116cab496637ce85a12999b1835ca80ee7d1309e2a6b79"
#define PIN_RSA "x5MpDaDmOIKG3lHPKeeunSaOgQjthCRfnagtkoTXvcw="
#define PIN_EC \
    "14ab926a6bf59c276c48fce0195954c5a8f5703f260c436ecb82d5d6aec1a91e"

static void test_pin_parse(void)
{
	static const struct {
		const char *in;
		int ok;
	} cases[] = {
		{ PIN_SS384, 1 },
		{ "D45EA12CB1AAF7BB144AC3923FDCCAD82063C245D183F748807641AEEC47"
		    "C448", 1 },
		{ "d4:5e:a1:2c:b1:aa:f7:bb:14:4a:c3:92:3f:dc:ca:d8:20:63:c2:"
		    "45:d1:83:f7:48:80:76:41:ae:ec:47:c4:48", 1 },
		{ PIN_SS384_B64, 1 },
		{ "1F6hLLGq97sUSsOSP9zK2CBjwkXRg/dIgHZBruxHxEg", 1 },
		{ "sha256//" PIN_SS384_B64, 1 },
		{ "", 0 },
		{ "d45ea12cb1aaf7bb144ac3923fdccad82063c245d183f748807641aeec47"
		    "c44", 0 },				/* 63 digits */
		{ PIN_SS384 "0", 0 },			/* 65 digits */
		{ "g45ea12cb1aaf7bb144ac3923fdccad82063c245d183f748807641aeec47"
		    "c448", 0 },
		{ "d4:5e:a1:2c:b1:aa:f7:bb:14:4a:c3:92:3f:dc:ca:d8:20:63:c2:"
		    "45:d1:83:f7:48:80:76:41:ae:ec:47:c4-48", 0 },
		{ "1F6hLLGq97sUSsOSP9zK2CBjwkXRg/dIgHZBruxHxEh=", 0 }, /* bits */
		{ "1F6hLLGq97sUSsOSP9zK2CBjwkXRg*dIgHZBruxHxEg=", 0 },
		{ "1F6hLLGq97sUSsOSP9zK2CBjwkXRg/dIgHZBruxHxEg==", 0 },
	};
	unsigned char want[32], got[32];
	char name[96];
	size_t i;

	unhex(PIN_SS384, want, sizeof(want));
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r;

		memset(got, 0, sizeof(got));
		r = tls_pin_parse(cases[i].in, got);
		snprintf(name, sizeof(name), "tls_pin_parse `%.50s' %s",
		    cases[i].in, cases[i].ok ? "accepted" : "refused");
		if (cases[i].ok)
			CHECK(r == 0 && memcmp(got, want, 32) == 0, name);
		else
			CHECK(r == -1, name);
	}
}

/* Test files live in a temporary directory. */
static char dir[64];
static char paths[32][128];
static int npaths;

/* Every file put() wrote: more names than its ring of paths remembers. */
static void dir_empty(const char *d)
{
	struct dirent *e;
	DIR *dp;

	if ((dp = opendir(d)) == NULL)
		return;
	while ((e = readdir(dp)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			unlinkat(dirfd(dp), e->d_name, 0);
	closedir(dp);
}

static const char *put(const char *name, const char *a, const char *b)
{
	char *path = paths[npaths++ % 32];
	FILE *f;

	snprintf(path, 128, "%s/%s", dir, name);
	if ((f = fopen(path, "w")) == NULL)
		return path;
	fputs(a, f);
	if (b != NULL)
		fputs(b, f);
	fclose(f);
	return path;
}

/* text with every "\n" made "\r\n" (a file from Windows). */
static char *crlf(const char *text)
{
	char *out = malloc(2 * strlen(text) + 1), *o = out;

	for (; out != NULL && *text; text++) {
		if (*text == '\n')
			*o++ = '\r';
		*o++ = *text;
	}
	if (out != NULL)
		*o = '\0';
	return out;
}

/* Every context loaded, freed at the end (the sanitizers' leak check). */
static struct tls_ctx *loaded[64];
static int nloaded;

/* A load should succeed (errpart NULL) or fail with errpart in err. */
static struct tls_ctx *load_checked(struct tls_ctx *ctx, const char *err,
    const char *side, const char *what, const char *errpart)
{
	char name[160];

	snprintf(name, sizeof(name), "%s load: %s", side, what);
	if (ctx != NULL && nloaded < 64)
		loaded[nloaded++] = ctx;
	if (errpart == NULL) {
		if (!CHECK(ctx != NULL, name))
			printf("#   error: %s\n", err);
	} else if (!CHECK(ctx == NULL && strstr(err, errpart) != NULL,
	    name)) {
		printf("#   error: `%s', wanted `%s'\n", err, errpart);
	}
	return ctx;
}

static struct tls_ctx *server_load(const char *cert, const char *key,
    const char *what, const char *errpart)
{
	char err[512] = "";
	struct tls_ctx *ctx = tls_server_ctx_load(cert, key, err, sizeof(err));

	return load_checked(ctx, err, "server", what, errpart);
}

static struct tls_ctx *client_load(const char *ca, const char *pin,
    int insecure, const char *what, const char *errpart)
{
	char err[512] = "";
	struct tls_ctx *ctx = tls_client_ctx_load(ca, pin, insecure, err,
	    sizeof(err));

	return load_checked(ctx, err, "client", what, errpart);
}

/* ---- a client and a server over a socketpair ---- */

struct pair {
	struct stream c, s;
};

static int pair_open(struct pair *p, struct tls_ctx *sctx,
    struct tls_ctx *cctx, const char *host)
{
	int sv[2];

	memset(p, 0, sizeof(*p));
	p->c.fd = p->s.fd = -1;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return -1;
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	p->s.fd = sv[0];
	p->c.fd = sv[1];
	p->s.tls = sctx ? tls_server_new(sctx) : NULL;
	p->c.tls = cctx ? tls_client_new(cctx, host) : NULL;
	return (sctx && !p->s.tls) || (cctx && !p->c.tls) ? -1 : 0;
}

static void pair_close(struct pair *p)
{
	stream_close(&p->c);
	stream_close(&p->s);
}

/* Pump both ends until both are ready (1) or one fails (0). */
static int pair_handshake(struct pair *p)
{
	int i;

	for (i = 0; i < 100; i++) {
		if (stream_ready(&p->c) && stream_ready(&p->s))
			return 1;
		if (stream_pump(&p->c) < 0 || stream_pump(&p->s) < 0)
			return 0;
	}
	return 0;
}

static unsigned char pattern(size_t k)
{
	return (unsigned char)(k * 7 + k / 251);
}

/* Send total bytes from one end to the other, checking every byte. */
static int pair_transfer(struct stream *from, struct stream *to,
    size_t total)
{
	static unsigned char buf[50000];
	size_t sent = 0, got = 0, j;
	ssize_t n;
	int i;

	for (i = 0; i < 10000 && got < total; i++) {
		if (sent < total) {
			size_t chunk = total - sent < sizeof(buf) ?
			    total - sent : sizeof(buf);

			for (j = 0; j < chunk; j++)
				buf[j] = pattern(sent + j);
			if ((n = stream_write(from, buf, chunk)) < 0)
				return 0;
			sent += (size_t)n;
		}
		if (stream_pump(from) < 0 || stream_pump(to) < 0)
			return 0;
		while ((n = stream_read(to, buf, sizeof(buf))) > 0)
			for (j = 0; j < (size_t)n; j++, got++)
				if (buf[j] != pattern(got))
					return 0;
		if (n < 0)
			return 0;
	}
	return got == total;
}

/* A handshake that must succeed, then data both ways. */
static void hs_ok(struct tls_ctx *sctx, struct tls_ctx *cctx,
    const char *host, const char *what, size_t bytes)
{
	struct pair p;
	char name[160];
	int ok = pair_open(&p, sctx, cctx, host) == 0 && pair_handshake(&p);

	snprintf(name, sizeof(name), "handshake: %s", what);
	if (!CHECK(ok, name))
		printf("#   client: %s; server: %s\n",
		    stream_error(&p.c) ? stream_error(&p.c) : "-",
		    stream_error(&p.s) ? stream_error(&p.s) : "-");
	if (ok && bytes > 0) {
		/* Large transfers through small socket buffers: writes stop
		 * halfway through records, a client's gathered records and
		 * read-ahead wait for the socket. */
		if (bytes > 100000) {
			int sz = 4096;

			setsockopt(p.c.fd, SOL_SOCKET, SO_SNDBUF, &sz,
			    sizeof(sz));
			setsockopt(p.s.fd, SOL_SOCKET, SO_SNDBUF, &sz,
			    sizeof(sz));
		}
		snprintf(name, sizeof(name), "%zu bytes each way: %s", bytes,
		    what);
		CHECK(pair_transfer(&p.c, &p.s, bytes) &&
		    pair_transfer(&p.s, &p.c, bytes), name);
	}
	pair_close(&p);
}

/* A handshake the client must refuse, saying why. */
static void hs_refused(struct tls_ctx *sctx, struct tls_ctx *cctx,
    const char *host, const char *what, const char *why)
{
	struct pair p;
	char name[160];
	const char *got;
	int ok = pair_open(&p, sctx, cctx, host) == 0 && !pair_handshake(&p);

	got = stream_error(&p.c);
	snprintf(name, sizeof(name), "refused (%s): %s", why, what);
	if (!CHECK(ok && !stream_ready(&p.c) && got != NULL &&
	    strcmp(got, why) == 0, name))
		printf("#   client error: %s\n", got ? got : "(none)");
	pair_close(&p);
}

/* A server fed garbage fails at once (not after a timeout). */
static void server_garbage(struct tls_ctx *sctx, const void *junk,
    size_t len, const char *what)
{
	unsigned char b[16];
	struct pair p;
	char name[160];
	int i, failed = 0;

	if (pair_open(&p, sctx, NULL, NULL) < 0 ||
	    write(p.c.fd, junk, len) != (ssize_t)len) {
		CHECK(0, what);
		pair_close(&p);
		return;
	}
	for (i = 0; i < 5 && !failed; i++)
		failed = stream_pump(&p.s) < 0 ||
		    stream_read(&p.s, b, sizeof(b)) < 0;
	snprintf(name, sizeof(name), "server drops a client sending %s",
	    what);
	CHECK(failed && stream_error(&p.s) != NULL, name);
	pair_close(&p);
}

/* The server goes away mid-handshake: the client says so. */
static void client_eof(struct tls_ctx *cctx)
{
	unsigned char b[16];
	struct pair p;
	int i, r = 0;

	if (pair_open(&p, NULL, cctx, "candy.test") < 0) {
		CHECK(0, "client: server closed during the handshake");
		pair_close(&p);
		return;
	}
	stream_pump(&p.c);
	close(p.s.fd);
	p.s.fd = -1;
	for (i = 0; i < 5 && r == 0; i++)
		r = stream_read(&p.c, b, sizeof(b));
	CHECK(r < 0 && stream_error(&p.c) != NULL,
	    "client: server closed during the handshake");
	pair_close(&p);
}

static void test_loads(void)
{
	char *crlf_cert = crlf(ec_pem), *crlf_key = crlf(ec_key);
	struct tls_ctx *c;

	/* Every key form with its certificate. */
	server_load(put("rsa.pem", rsa_pem, NULL), put("rsa.key", rsa_key,
	    NULL), "RSA, PKCS#1", NULL);
	server_load(put("rsa.pem", rsa_pem, NULL), put("rsa.p8", rsa_p8,
	    NULL), "RSA, PKCS#8", NULL);
	server_load(put("ec.pem", ec_pem, NULL), put("ec.key", ec_key, NULL),
	    "EC P-256, SEC1 after EC PARAMETERS", NULL);
	server_load(put("ec.pem", ec_pem, NULL), put("ec.p8", ec_p8, NULL),
	    "EC P-256, PKCS#8", NULL);
	server_load(put("ss384.pem", ss384_pem, NULL), put("ss384.key",
	    ss384_key, NULL), "EC P-384, SEC1", NULL);
	server_load(put("p521.pem", p521_pem, NULL), put("p521.p8", p521_p8,
	    NULL), "EC P-521, PKCS#8", NULL);
	server_load(put("both.pem", ec_pem, ec_key), put("both.pem", ec_pem,
	    ec_key), "certificate and key in one file", NULL);
	/* Chains. */
	server_load(put("chain.pem", rsa_pem, ca_pem), put("rsa.key",
	    rsa_key, NULL), "chain leaf first", NULL);
	server_load(put("text.pem", "Certificate:\n    Data: ...\n", ec_pem),
	    put("ec.key", ec_key, NULL), "text before the PEM", NULL);
	if (crlf_cert != NULL && crlf_key != NULL)
		server_load(put("crlf.pem", crlf_cert, NULL), put("crlf.key",
		    crlf_key, NULL), "CRLF line ends", NULL);
	free(crlf_cert);
	free(crlf_key);
	/* Refusals, each with its reason. */
	server_load(put("rchain.pem", ca_pem, rsa_pem), put("rsa.key",
	    rsa_key, NULL), "chain in the wrong order", "does not match");
	server_load(put("rsa.pem", rsa_pem, NULL), put("ec.key", ec_key,
	    NULL), "EC key for an RSA certificate", "does not match");
	server_load(put("ec.pem", ec_pem, NULL), put("ss384.key", ss384_key,
	    NULL), "another EC key", "does not match");
	server_load(put("ec.pem", ec_pem, NULL), put("ed.p8", ed_p8, NULL),
	    "Ed25519 key", "unsupported key type");
	server_load(put("ec.pem", ec_pem, NULL), put("enc.p8", enc_p8, NULL),
	    "encrypted key", "encrypted keys are not supported");
	server_load(put("ec.pem", ec_pem, NULL), put("ec.pem", ec_pem, NULL),
	    "a certificate as key", "no PEM private key");
	server_load(put("junk", "hello\n", NULL), put("ec.key", ec_key,
	    NULL), "no certificate", "no PEM certificate");
	server_load(put("cut.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n",
	    NULL), put("ec.key", ec_key, NULL), "cut PEM", "malformed PEM");
	server_load("/nonexistent/c.pem", put("ec.key", ec_key, NULL),
	    "missing certificate",
	    "--cert `/nonexistent/c.pem': No such file");
	server_load(put("ec.pem", ec_pem, NULL), "/nonexistent/k.pem",
	    "missing key", "--key `/nonexistent/k.pem': No such file");

	/* Client settings. */
	c = client_load(put("ca.pem", ca_pem, NULL), NULL, 0, "--ca", NULL);
	client_load("/nonexistent/ca.pem", NULL, 0, "missing --ca",
	    "--ca `/nonexistent/ca.pem': No such file");
	client_load(put("junk", "hello\n", NULL), NULL, 0, "--ca without "
	    "certificates", "no usable certificate");
	client_load(NULL, "abc", 0, "bad --pin", "bad --pin `abc'");
	client_load(NULL, PIN_SS384, 0, "--pin alone", NULL);
	client_load(NULL, NULL, 1, "--insecure alone", NULL);
	if (access("/etc/ssl/certs/ca-certificates.crt", R_OK) == 0)
		client_load(NULL, NULL, 0, "the system trust store", NULL);
	(void)c;
}

static void test_handshakes(void)
{
	static const unsigned char http[] =
	    "GET / HTTP/1.1\r\nHost: candy.test\r\n\r\n";
	unsigned char hello[69] = { 0x16, 0x03, 0x01, 0x00, 0x40, 0x01 };
	struct tls_ctx *rsa, *ec, *expired, *ss384, *p521, *ca, *ca_ss384;
	const char *eckey = put("ec.key", ec_key, NULL);

	rsa = server_load(put("chain.pem", rsa_pem, ca_pem), put("rsa.key",
	    rsa_key, NULL), "RSA chain for the handshakes", NULL);
	ec = server_load(put("ec.pem", ec_pem, NULL), eckey,
	    "EC for the handshakes", NULL);
	expired = server_load(put("expired.pem", expired_pem, NULL), eckey,
	    "expired certificate (loads: dates are the client's business)",
	    NULL);
	ss384 = server_load(put("ss384.pem", ss384_pem, NULL),
	    put("ss384.key", ss384_key, NULL), "self-signed P-384", NULL);
	p521 = server_load(put("p521.pem", p521_pem, NULL), put("p521.p8",
	    p521_p8, NULL), "self-signed P-521", NULL);
	ca = client_load(put("ca.pem", ca_pem, NULL), NULL, 0, "the test CA",
	    NULL);
	ca_ss384 = client_load(put("ss384.pem", ss384_pem, NULL), NULL, 0,
	    "a self-signed certificate as --ca", NULL);
	if (!rsa || !ec || !expired || !ss384 || !p521 || !ca || !ca_ss384)
		return;

	/* A CA, the name, the address. */
	hs_ok(rsa, ca, "candy.test", "RSA server, CA-signed", 100000);
	hs_ok(ec, ca, "candy.test", "EC server, CA-signed", 100000);
	hs_ok(ec, ca, "candy.test", "EC server, socket buffers of 4 KiB",
	    1000000);
	hs_ok(ec, ca, "CANDY.test", "name in another case", 0);
	hs_ok(rsa, ca, "127.0.0.1", "address in the certificate", 0);
	hs_refused(ec, ca, "other.test", "wrong name", "name mismatch");
	hs_refused(rsa, ca, "127.0.0.2", "wrong address", "name mismatch");
	hs_refused(ec, ca, "127.0.0.1", "address not in the certificate",
	    "name mismatch");
	hs_refused(expired, ca, "candy.test", "expired",
	    "expired or not yet valid");
	hs_refused(ss384, ca, "candy.test", "self-signed",
	    "unknown issuer");
	hs_ok(ss384, ca_ss384, "candy.test", "self-signed given as --ca", 0);
	hs_refused(ss384, ca_ss384, "other.test",
	    "self-signed given as --ca, wrong name", "name mismatch");

	/* --pin: that key, whatever the chain, name and dates. */
	hs_ok(ss384, client_load(NULL, PIN_SS384, 0, "pin P-384", NULL),
	    "candy.test", "pinned P-384, hex", 1000);
	hs_ok(ss384, client_load(NULL, PIN_SS384_B64, 0, "pin base64",
	    NULL), "other.test", "pinned, base64, any name", 0);
	hs_ok(p521, client_load(NULL, PIN_P521, 0, "pin P-521", NULL),
	    "candy.test", "pinned P-521", 0);
	hs_ok(rsa, client_load(NULL, PIN_RSA, 0, "pin RSA", NULL),
	    "candy.test", "pinned RSA", 0);
	hs_ok(expired, client_load(NULL, PIN_EC, 0, "pin P-256", NULL),
	    "candy.test", "pinned, expired", 0);
	hs_ok(ss384, client_load(put("ca.pem", ca_pem, NULL), PIN_SS384, 0,
	    "pin and CA", NULL), "candy.test", "pinned, other CA given", 0);
	hs_refused(ss384, client_load(NULL, PIN_P521, 0, "other pin", NULL),
	    "candy.test", "another key", "key does not match --pin");
	hs_refused(ec, client_load(put("ca.pem", ca_pem, NULL), PIN_RSA, 0,
	    "wrong pin and CA", NULL), "candy.test",
	    "CA-signed but another key", "key does not match --pin");

	/* --insecure. */
	hs_ok(ss384, client_load(NULL, NULL, 1, "insecure", NULL),
	    "other.test", "--insecure", 1000);

	/* Garbage and silence. */
	server_garbage(ec, http, sizeof(http) - 1, "HTTP");
	/* A ClientHello of 60 bytes whose inner lengths overrun it: fixed
	 * bytes, as random ones sometimes announce a longer message and the
	 * server rightly waits for the rest. */
	memset(hello + 6, 0xff, sizeof(hello) - 6);
	hello[6] = 0;
	hello[7] = 0;
	hello[8] = 60;
	hello[9] = 3;
	hello[10] = 3;
	server_garbage(ec, hello, sizeof(hello), "a broken ClientHello");
	client_eof(ca);
}

void test_tls(void)
{
	char name[80];

	snprintf(dir, sizeof(dir), "/tmp/candy-t_tls.XXXXXX");
	if (!CHECK(mkdtemp(dir) != NULL, "tls: temporary directory"))
		return;
	test_pin_parse();
	test_loads();
	test_handshakes();
	/* Full-size input and output records (tls.c says why): 37 KiB. */
	snprintf(name, sizeof(name), "tls: %zu bytes per server connection "
	    "(<= 40960)", tls_conn_size());
	CHECK(tls_conn_size() <= 40960, name);
	while (nloaded > 0)
		tls_ctx_free(loaded[--nloaded]);
	dir_empty(dir);
	CHECK(rmdir(dir) == 0, "tls: the temporary directory is removed");
}
