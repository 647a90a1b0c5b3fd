// A replica's log, followed live (GET .../logs?follow=1, chunked): the
// text is appended as text, the last MAX_CHARS kept, and the view sticks
// to the bottom unless the reader scrolled up.

import { useEffect, useRef, useState } from 'preact/hooks';
import { followLog } from './api.js';

const MAX_CHARS = 256 * 1024;

export function Logs({ run, replicas }) {
    const nums = [...new Set(replicas.map((r) => r.num))].sort((a, b) => a - b);
    const [replica, setReplica] = useState(nums.length ? nums[0] : 0);
    const [text, setText] = useState('');
    const [state, setState] = useState('following');
    const pre = useRef(null);
    const stick = useRef(true);

    useEffect(() => {
        const ctl = new AbortController();
        let buf = '';
        setText('');
        setState('following');
        followLog(run, replica, (piece) => {
            if (!piece) return;
            buf += piece;
            if (buf.length > MAX_CHARS) buf = buf.slice(buf.length - MAX_CHARS);
            setText(buf);
        }, ctl.signal)
            .then(() => setState('ended: the replica has finished'))
            .catch((e) => { if (!ctl.signal.aborted) setState(`stopped: ${e.message}`); });
        return () => ctl.abort();
    }, [run, replica]);

    useEffect(() => {
        const el = pre.current;
        if (el && stick.current) el.scrollTop = el.scrollHeight;
    }, [text]);

    const onScroll = (e) => {
        const el = e.currentTarget;
        stick.current = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
    };

    return (
        <div class="logs">
            <div class="bar">
                <label>Replica{' '}
                    <select data-testid="log-replica" value={replica}
                        onChange={(e) => setReplica(Number(e.currentTarget.value))}>
                        {(nums.length ? nums : [0]).map((n) => <option value={n}>{n}</option>)}
                    </select>
                </label>
                <span class="muted" data-testid="log-state">{state}</span>
            </div>
            <pre ref={pre} onScroll={onScroll} data-testid="log">{text}</pre>
        </div>
    );
}
