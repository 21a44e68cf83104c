// zh-CN and English labels. The default follows the browser; the choice is remembered.
const LABELS = {
  en: {
    title: 'GridWatch', lang: '中文', langName: 'Switch to Chinese',
    login: 'Sign in', username: 'Username', password: 'Password', logout: 'Sign out',
    loginTitle: 'Command-centre console', loginFailed: 'Sign-in failed: {msg}',
    review: 'Review', map: 'Map', board: 'Supervision', assessment: 'Assessment',
    work: 'Work queue', ticket: 'Ticket',
    liveOn: 'Live', liveConnecting: 'Connecting…', liveOff: 'Offline — retrying',
    queueEmpty: 'Nothing waits for review.', queueCount: '{n} waiting for review',
    reason: 'Reason for review', detections: 'Detections',
    detectionsN: '{n} detections in {i} incidents', confidence: 'Best confidence',
    sources: 'Sources', fpRate: 'False-positive rate', confirmedN: 'Confirmed',
    dismissedN: 'Dismissed', suspended: 'auto-dispatch suspended', noSnapshot: 'No snapshot',
    snapshotPending: 'Snapshot not at the centre (yet): an offline edge box sends it when its uplink returns',
    confirm: 'Confirm', dismiss: 'Dismiss', merge: 'Merge', department: 'Department',
    routedTo: 'routed to {d}', dismissReason: 'Reason for dismissing',
    mergeInto: 'Merge into', noCandidates: 'No open ticket of this kind in this or a neighbouring cell.',
    cancel: 'Cancel', submit: 'Submit', open: 'Open',
    keysTitle: 'Keys', keyNext: 'next', keyPrev: 'previous', keyConfirm: 'confirm',
    keyDept: 'choose department', keyDismiss: 'dismiss', keyMerge: 'merge',
    keyOpen: 'open ticket', keyPick: 'pick candidate', keyCancel: 'cancel',
    done: '{id}: {action}', failed: 'Failed: {msg}',
    shadeBy: 'Shade by', shadeOpen: 'Open tickets', shadeExcess: 'Hot-spot excess (observed / expected)',
    kind: 'Kind', allKinds: 'All kinds', cellTickets: 'Cell {cell}', noTickets: 'No open tickets.',
    zoomIn: 'Zoom in', zoomOut: 'Zoom out', reset: 'Reset view',
    cellsWithTickets: 'Cells with open tickets',
    cellHint: 'Click a cell on the map, or one of the cells below, to see its tickets. Drag to pan; wheel, + and − to zoom; arrow keys pan when the map has focus.', mapLabel: 'Grid map: {n} cells, {t} open tickets',
    legend: 'Legend', towns: 'towns', villages: 'villages', highlighted: 'highlighted',
    status: 'Status', priority: 'Priority', place: 'Place', opened: 'Opened', due: 'Due',
    timeLeft: 'Time left', overdueBy: 'overdue by {d}', escalation: 'Card',
    timeline: 'Timeline', evidence: 'Evidence', hotspot: 'Hot spot',
    observed: 'Observed', expected: 'Expected', excess: 'Excess', pValue: 'p-value',
    hourly: 'Hourly profile (observed bars, expected line)', topSources: 'Top sources',
    memberCells: 'Member cells', showOnMap: 'Show on map', back: 'Back',
    boardTitle: 'Open tickets by time left', boardEmpty: 'No open tickets.',
    unit: 'Unit', yellow: 'yellow', red: 'red',
    month: 'Month', csv: 'Download CSV', assessmentTitle: 'Monthly assessment (考核)',
    onTime: 'On time', returnRate: 'Returned', reminders: 'Reminders', yellowCards: 'Yellow cards',
    redCards: 'Red cards', tickets: 'Tickets', accept: 'Accept', resolve: 'Resolve',
    return: 'Return', note: 'Note', returnReason: 'Reason for returning',
    resolveNote: 'What was done', workEmpty: 'No open work orders for your department.',
    accessDenied: 'This view is not for your role.', version: 'Version',
    dispatch: 'Dispatch', recall: 'Recall', close: 'Close', reopen: 'Reopen',
    recallReason: 'Reason for recalling', reopenReason: 'Reason for reopening',
    workInReview: 'Pending review: work it in the review queue',
  },
  'zh-CN': {
    title: '网格哨兵', lang: 'English', langName: '切换到英文',
    login: '登录', username: '用户名', password: '密码', logout: '退出',
    loginTitle: '指挥中心控制台', loginFailed: '登录失败：{msg}',
    review: '审核', map: '一张图', board: '督办', assessment: '考核',
    work: '工单', ticket: '工单详情',
    liveOn: '实时', liveConnecting: '连接中…', liveOff: '已断开，重连中',
    queueEmpty: '暂无待审核工单。', queueCount: '待审核 {n} 件',
    reason: '待审原因', detections: '检测',
    detectionsN: '{n} 次检测，{i} 起事件', confidence: '最高置信度',
    sources: '来源', fpRate: '误报率', confirmedN: '已确认',
    dismissedN: '已驳回', suspended: '已暂停自动派单', noSnapshot: '无抓拍',
    snapshotPending: '抓拍尚未到达中心：离线的边缘盒恢复上行后会补传',
    confirm: '确认派单', dismiss: '驳回', merge: '合并', department: '部门',
    routedTo: '默认派往 {d}', dismissReason: '驳回原因',
    mergeInto: '合并到', noCandidates: '本网格及相邻网格内没有同类未结工单。',
    cancel: '取消', submit: '提交', open: '打开',
    keysTitle: '快捷键', keyNext: '下一件', keyPrev: '上一件', keyConfirm: '确认派单',
    keyDept: '选择部门', keyDismiss: '驳回', keyMerge: '合并',
    keyOpen: '打开工单', keyPick: '选择候选', keyCancel: '取消',
    done: '{id}：{action}', failed: '失败：{msg}',
    shadeBy: '着色', shadeOpen: '未结工单数', shadeExcess: '热点超额（观测/期望）',
    kind: '类型', allKinds: '全部类型', cellTickets: '网格 {cell}', noTickets: '无未结工单。',
    zoomIn: '放大', zoomOut: '缩小', reset: '复位',
    cellsWithTickets: '有未结工单的网格',
    cellHint: '点击地图上的网格或下方网格按钮查看工单。拖动平移；滚轮、+ 和 − 缩放；地图获得焦点时方向键平移。', mapLabel: '网格地图：{n} 个网格，{t} 件未结工单',
    legend: '图例', towns: '镇街', villages: '村居', highlighted: '高亮',
    status: '状态', priority: '优先级', place: '位置', opened: '立案', due: '时限',
    timeLeft: '剩余时间', overdueBy: '超时 {d}', escalation: '督办',
    timeline: '处置记录', evidence: '证据', hotspot: '热点',
    observed: '观测', expected: '期望', excess: '超额', pValue: 'p 值',
    hourly: '逐时分布（柱：观测，线：期望）', topSources: '主要来源',
    memberCells: '成员网格', showOnMap: '在地图上显示', back: '返回',
    boardTitle: '未结工单（按剩余时间）', boardEmpty: '暂无未结工单。',
    unit: '责任单位', yellow: '黄牌', red: '红牌',
    month: '月份', csv: '下载 CSV', assessmentTitle: '月度考核',
    onTime: '按时率', returnRate: '退回率', reminders: '提醒', yellowCards: '黄牌',
    redCards: '红牌', tickets: '工单数', accept: '签收', resolve: '办结',
    return: '退回', note: '备注', returnReason: '退回原因',
    resolveNote: '处置情况', workEmpty: '本部门暂无未结工单。',
    accessDenied: '该视图不适用于您的角色。', version: '版本',
    dispatch: '派单', recall: '撤回', close: '结案', reopen: '重办',
    recallReason: '撤回原因', reopenReason: '重办原因',
    workInReview: '待审核：请在审核队列中处理',
  },
};

const ENUMS = {
  en: {
    pending_review: 'pending review', dispatched: 'dispatched', accepted: 'accepted',
    resolved: 'resolved', closed: 'closed', dismissed: 'dismissed', returned: 'returned',
    reopened: 'reopened', none: '—', due_soon: 'due soon', yellow: 'yellow card', red: 'red card',
    low_confidence: 'low confidence', unknown_kind: 'unknown kind',
    source_suspended: 'source suspended', auto_dispatch_off: 'auto-dispatch off',
    recalled: 'recalled', smoke: 'smoke alarm', door_forced: 'door forced',
    door_held_open: 'door held open', helmetless_rider: 'helmetless rider',
    wrong_way_ebike: 'wrong-way e-bike',
  },
  'zh-CN': {
    pending_review: '待审核', dispatched: '已派单', accepted: '已签收', resolved: '已办结',
    closed: '已结案', dismissed: '已驳回', returned: '已退回', reopened: '已重办',
    none: '—', due_soon: '即将到期', yellow: '黄牌', red: '红牌',
    low_confidence: '置信度低', unknown_kind: '未知类型', source_suspended: '来源已暂停',
    auto_dispatch_off: '未开自动派单', recalled: '已撤回', smoke: '烟感报警',
    door_forced: '门被撬', door_held_open: '门长开', helmetless_rider: '未戴头盔',
    wrong_way_ebike: '电动车逆行',
    create: '立案', created: '立案', confirm: '确认派单', dismiss: '驳回', merge: '合并',
    dispatch: '派单', accept: '签收', return: '退回', resolve: '办结', close: '结案',
    reopen: '重办', recall: '撤回', reclassify: '改类', escalate: '督办', update: '修改',
  },
};

export const LANGS = Object.keys(LABELS);

export function initialLang() {
  const saved = localStorage.getItem('gridwatch.lang');
  if (saved && LABELS[saved]) return saved;
  return (navigator.languages || [navigator.language]).some((l) => /^zh/i.test(l || ''))
    ? 'zh-CN' : 'en';
}

let lang = 'en';

export function setLang(value) {
  lang = LABELS[value] ? value : 'en';
  localStorage.setItem('gridwatch.lang', lang);
  document.documentElement.lang = lang;
}

export function getLang() { return lang; }

export function t(key, vars = {}) {
  const text = LABELS[lang][key] ?? LABELS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, k) => (vars[k] ?? ''));
}

// A value of an API enum (status, escalation, review reason, kind, audit action).
export function tv(value) {
  if (value === null || value === undefined) return '—';
  return ENUMS[lang][value] ?? ENUMS.en[value] ?? String(value).replaceAll('_', ' ');
}
