using System.Buffers;
using System.Globalization;
using System.Text;
using GpuExecutor.Containers;

namespace GpuExecutor.Stages;

/// <summary>
/// Passes a stage's stdout through byte for byte until the server's trailer for this stage
/// ("\x1egpu-executor:NONCE:CODE\n"), which it removes and reads the exit code from. A trailer
/// may arrive split across any number of chunks; bytes that only looked like one are passed on.
/// </summary>
public sealed class StageTrailerScanner(string nonce)
{
    private readonly byte[] _prefix = StageServer.TrailerPrefix(nonce);
    private readonly List<byte> _held = [];
    private int _matched;

    public int? ExitCode { get; private set; }

    /// <summary>Appends the output part of <paramref name="chunk"/> to <paramref name="output"/>; anything after the trailer is dropped.</summary>
    public void Feed(ReadOnlySpan<byte> chunk, ArrayBufferWriter<byte> output)
    {
        var index = 0;
        while (index < chunk.Length && ExitCode is null)
        {
            if (_matched == 0)
            {
                // Fast path: plain output up to the next byte that could start a trailer.
                var start = chunk[index..].IndexOf(_prefix[0]);
                if (start < 0)
                {
                    output.Write(chunk[index..]);
                    return;
                }
                output.Write(chunk.Slice(index, start));
                index += start;
            }

            var value = chunk[index];
            if (_matched < _prefix.Length)
            {
                if (value == _prefix[_matched])
                {
                    _held.Add(value);
                    _matched++;
                    index++;
                }
                else
                {
                    Release(output); // the same byte is looked at again, as a possible start
                }
            }
            else if (value == (byte)'\n' && _held.Count > _prefix.Length)
            {
                var digits = CollectionsMarshalSpan(_held)[_prefix.Length..];
                ExitCode = int.Parse(Encoding.ASCII.GetString(digits), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
                _held.Clear();
            }
            else if (char.IsAsciiDigit((char)value) && _held.Count - _prefix.Length < 10)
            {
                _held.Add(value);
                index++;
            }
            else
            {
                Release(output);
            }
        }
    }

    private void Release(ArrayBufferWriter<byte> output)
    {
        output.Write(CollectionsMarshalSpan(_held));
        _held.Clear();
        _matched = 0;
    }

    private static ReadOnlySpan<byte> CollectionsMarshalSpan(List<byte> list) =>
        System.Runtime.InteropServices.CollectionsMarshal.AsSpan(list);
}
