using System.Buffers;
using System.Text;
using System.Text.RegularExpressions;

namespace GpuExecutor.Stages;

/// <summary>
/// Takes bash's job notices out of a stage's stderr once the executor has signalled the stage.
/// A non-interactive bash prints "Terminated" (or "./train.sh: line 12:  45 Terminated  sleep 1")
/// whenever a foreground child dies of a signal, even when the shell itself traps it; after a stop
/// every shell of the job, the runner's included, has such a child. Those lines say nothing the
/// executor's own stop message does not, and read like a crash, so they are dropped; every other
/// byte passes through unchanged. Before the stage is signalled nothing is held or dropped: a
/// notice then is about the job's own kill, and worth seeing.
/// </summary>
public sealed partial class SignalNoticeFilter
{
    /// <summary>
    /// A notice is short: the signal's name, or a location, a pid, the name and the command. A
    /// line that grows past this is output and passes through; this also bounds what is held.
    /// </summary>
    private const int LongestNotice = 1024;

    private readonly List<byte> _line = [];
    private bool _armed;
    private bool _midLine;
    private bool _passingLongLine;

    /// <summary>From now on, whole lines that are signal notices are dropped.</summary>
    public void Arm() => _armed = true;

    /// <summary>Appends what of <paramref name="chunk"/> is output to <paramref name="output"/>.</summary>
    public void Feed(ReadOnlySpan<byte> chunk, IBufferWriter<byte> output)
    {
        if (!_armed)
        {
            output.Write(chunk);
            if (chunk.Length > 0)
                _midLine = chunk[^1] != (byte)'\n';
            return;
        }

        while (chunk.Length > 0)
        {
            var end = chunk.IndexOf((byte)'\n');
            var piece = end < 0 ? chunk : chunk[..(end + 1)];
            chunk = chunk[piece.Length..];
            // A line that began before the stop, or is too long for a notice, is plain output.
            if (_midLine || _passingLongLine)
            {
                output.Write(piece);
                _midLine = _passingLongLine = end < 0;
                continue;
            }
            _line.AddRange(piece);
            if (end >= 0)
            {
                if (!IsNotice(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_line)))
                    output.Write(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_line));
                _line.Clear();
            }
            else if (_line.Count > LongestNotice)
            {
                output.Write(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_line));
                _line.Clear();
                _passingLongLine = true;
            }
        }
    }

    /// <summary>At the stage's end: a held partial line is output, it was no notice.</summary>
    public void Flush(IBufferWriter<byte> output)
    {
        output.Write(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_line));
        _line.Clear();
    }

    public static bool IsNotice(ReadOnlySpan<byte> line)
    {
        if (line.Length > LongestNotice + 1)
            return false;
        return NoticeLine().IsMatch(Encoding.UTF8.GetString(line).TrimEnd('\n', '\r'));
    }

    // bash's words (strsignal) for the signals a stop sends: the configurable stop signal and KILL.
    // Either alone on the line, or as "WHERE: line N: PID NAME COMMAND", the name padded by spaces.
    [GeneratedRegex(@"^(?:.*: line [0-9]+: +[0-9]+ +(?:Terminated|Killed|Hangup|Quit|User defined signal [12])(?: \(core dumped\))?(?: +.*)?|(?:Terminated|Killed|Hangup|Quit|User defined signal [12])(?: \(core dumped\))?)$", RegexOptions.CultureInvariant)]
    private static partial Regex NoticeLine();
}
