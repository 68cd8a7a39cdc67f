/*
 * ui.c — lookup in the web page's embedded asset table (ui.h).
 */
#include "ui.h"

#include <string.h>

const struct srv_ui_asset *srv_ui_find(const char *path)
{
    for (size_t i = 0; i < srv_ui_n_assets; i++)
        if (!strcmp(srv_ui_assets[i].path, path))
            return &srv_ui_assets[i];
    return NULL;
}
