#!/bin/bash
echo app
